"""A tiny random torchvision ViT and the same network as a timm ViT (weights copied tensor for tensor).

Why both: the reference libraries explain torchvision's VisionTransformer (LXT's ViT patches, torch-cam's LeGrad)
while deepprobe's transformer explainers read timm's; one function in two layouts lets a test hold deepprobe's
map on the timm model against the reference's map on the torchvision model. No ViT weights are bundled, so the
weights are random (seeded): the comparisons are of algorithms, not of what a trained ViT looks at.
"""
from __future__ import annotations

import torch
from torch import nn

SIZE, PATCH, DIM, DEPTH, HEADS, MLP, CLASSES = 32, 8, 32, 3, 4, 64, 5


def torchvision_vit(seed: int = 0, size: int = SIZE, patch: int = PATCH, dim: int = DIM, depth: int = DEPTH,
                    heads: int = HEADS, mlp: int = MLP, classes: int = CLASSES) -> nn.Module:
    """Random weights, seeded (benchmarks build a ViT-S/16 with the same function)."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    net = VisionTransformer(image_size=size, patch_size=patch, num_layers=depth, num_heads=heads, hidden_dim=dim,
                            mlp_dim=mlp, num_classes=classes).eval()
    with torch.no_grad():  # torchvision zero-inits the head and small position embeddings: give them content
        net.heads.head.weight.normal_(0, 0.2)
        net.heads.head.bias.normal_(0, 0.1)
        net.encoder.pos_embedding.normal_(0, 0.5)
        net.class_token.normal_(0, 0.5)
    return net


def timm_twin(tv: nn.Module) -> nn.Module:
    """The timm VisionTransformer that computes exactly what torchvision's `tv` computes."""
    from timm.models.vision_transformer import VisionTransformer

    dim = tv.hidden_dim
    net = VisionTransformer(img_size=tv.image_size, patch_size=tv.patch_size, num_classes=tv.num_classes,
                            embed_dim=dim, depth=len(tv.encoder.layers), num_heads=tv.encoder.layers[0].num_heads,
                            mlp_ratio=tv.mlp_dim / dim, qkv_bias=True).eval()
    state = {"patch_embed.proj.weight": tv.conv_proj.weight, "patch_embed.proj.bias": tv.conv_proj.bias,
             "cls_token": tv.class_token, "pos_embed": tv.encoder.pos_embedding,
             "norm.weight": tv.encoder.ln.weight, "norm.bias": tv.encoder.ln.bias,
             "head.weight": tv.heads.head.weight, "head.bias": tv.heads.head.bias}
    for i, layer in enumerate(tv.encoder.layers):
        b = f"blocks.{i}."
        state.update({
            b + "norm1.weight": layer.ln_1.weight, b + "norm1.bias": layer.ln_1.bias,
            b + "attn.qkv.weight": layer.self_attention.in_proj_weight,
            b + "attn.qkv.bias": layer.self_attention.in_proj_bias,
            b + "attn.proj.weight": layer.self_attention.out_proj.weight,
            b + "attn.proj.bias": layer.self_attention.out_proj.bias,
            b + "norm2.weight": layer.ln_2.weight, b + "norm2.bias": layer.ln_2.bias,
            b + "mlp.fc1.weight": layer.mlp[0].weight, b + "mlp.fc1.bias": layer.mlp[0].bias,
            b + "mlp.fc2.weight": layer.mlp[3].weight, b + "mlp.fc2.bias": layer.mlp[3].bias})
    net.load_state_dict({k: v.detach().clone() for k, v in state.items()})
    return net


def bundle(net: nn.Module, spec: str = "test:vit", size: int = SIZE, device: str | torch.device = "cpu"):
    """A ModelBundle over `net` with mean = std = 0.5 normalization (as deepprobe's model sources build them)."""
    from deepprobe.models.bundle import ModelBundle
    from deepprobe.models.preprocess import Normalized, Preprocess

    wrapped = Normalized(net, (0.5,) * 3, (0.5,) * 3).eval().to(device)
    for p in wrapped.parameters():
        p.requires_grad_(False)
    return ModelBundle(net=wrapped, labels=[f"class {i}" for i in range(CLASSES)], spec=spec,
                       device=torch.device(device),
                       preprocess=Preprocess(crop=(size, size), resize=None, mean=(0.5,) * 3, std=(0.5,) * 3))


def hf_twin(tv: nn.Module) -> nn.Module:
    """The Hugging Face ViTForImageClassification that computes exactly what torchvision's `tv` computes."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=SIZE, patch_size=PATCH, hidden_size=DIM, num_hidden_layers=DEPTH,
                       num_attention_heads=HEADS, intermediate_size=MLP, num_labels=CLASSES, layer_norm_eps=1e-6,
                       hidden_act="gelu")
    net = ViTForImageClassification(config).eval()
    d = DIM
    state = {"vit.embeddings.patch_embeddings.projection.weight": tv.conv_proj.weight,
             "vit.embeddings.patch_embeddings.projection.bias": tv.conv_proj.bias,
             "vit.embeddings.cls_token": tv.class_token, "vit.embeddings.position_embeddings": tv.encoder.pos_embedding,
             "vit.layernorm.weight": tv.encoder.ln.weight, "vit.layernorm.bias": tv.encoder.ln.bias,
             "classifier.weight": tv.heads.head.weight, "classifier.bias": tv.heads.head.bias}
    for i, layer in enumerate(tv.encoder.layers):
        b, attn = f"vit.layers.{i}.", layer.self_attention
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            state[b + f"attention.{name}.weight"] = attn.in_proj_weight[j * d:(j + 1) * d]
            state[b + f"attention.{name}.bias"] = attn.in_proj_bias[j * d:(j + 1) * d]
        state.update({
            b + "attention.o_proj.weight": attn.out_proj.weight, b + "attention.o_proj.bias": attn.out_proj.bias,
            b + "layernorm_before.weight": layer.ln_1.weight, b + "layernorm_before.bias": layer.ln_1.bias,
            b + "layernorm_after.weight": layer.ln_2.weight, b + "layernorm_after.bias": layer.ln_2.bias,
            b + "mlp.fc1.weight": layer.mlp[0].weight, b + "mlp.fc1.bias": layer.mlp[0].bias,
            b + "mlp.fc2.weight": layer.mlp[3].weight, b + "mlp.fc2.bias": layer.mlp[3].bias})
    net.load_state_dict({k: v.detach().clone() for k, v in state.items()})
    return net


def lxt_reference(tv: nn.Module, xn: torch.Tensor, targets: torch.Tensor, conv_gamma: float = 0.25,
                  lin_gamma: float = 0.05) -> torch.Tensor:
    """LXT's own AttnLRP of torchvision's ViT `tv` at normalized inputs `xn`, as LXT's examples/vit_torch.py does
    it: LXT's patch map for torchvision's ViT and its Zennit patch, applied to the classes (LXT's way) and undone
    after; relevance = input x gradient."""
    import importlib.util
    import os

    from zennit.composites import LayerMapComposite
    from zennit.core import BasicHook
    from zennit.rules import Gamma

    from deepprobe.explain.attnlrp import lxt_rules

    lxt = lxt_rules()
    path = os.path.join(os.path.dirname(lxt.patches.__file__), "models", "vit_torch.py")
    spec = importlib.util.spec_from_file_location("lxt_vit_torch", path)  # lxt.efficient.models' __init__
    vit_torch = importlib.util.module_from_spec(spec)  # imports LLM patches that transformers 5 breaks
    spec.loader.exec_module(vit_torch)
    classes = (nn.GELU, nn.LayerNorm, nn.MultiheadAttention)
    saved = {(c, n): c.__dict__.get(n) for c in classes for n in ("forward", "original_forward")}
    saved_hook = {n: BasicHook.__dict__[n] for n in ("forward", "backward")}
    inp = xn.detach().clone().requires_grad_(True)
    try:
        for target, patch in vit_torch.cp_LRP.items():
            patch(target)
        lxt.zennit_patches.monkey_patch_zennit()
        composite = LayerMapComposite([(nn.Conv2d, Gamma(conv_gamma)), (nn.Linear, Gamma(lin_gamma))])
        with composite.context(tv):
            tv(inp).gather(1, targets[:, None]).sum().backward()
    finally:
        for (c, n), v in saved.items():
            if v is None:
                if n in c.__dict__:
                    delattr(c, n)
            else:
                setattr(c, n, v)
        for n, v in saved_hook.items():
            setattr(BasicHook, n, v)
    return (inp * inp.grad).detach()
