"""AttnLRP (Achtibat et al., ICML 2024) on vision transformers, with LXT's rules: one forward and one backward pass.

LXT computes LRP as Gradient x Input after patching the forward functions of the layers whose gradient is not
their relevance rule. Its recipe for ViTs (LXT 2.1, `lxt.efficient.models.vit_torch` and `examples/vit_torch.py`),
applied here to the model's own layer instances for the duration of one call and then removed:
- element-wise activations (GELU, QuickGELU, SiLU): LXT's identity rule (`non_linear_forward`);
- LayerNorm: LXT's `layer_norm_forward` (no gradient through the standard deviation: the identity rule);
- attention: CP-LRP inside the attention (no gradient through the query and key, so the softmax is treated as
  constant weights), as LXT does for ViTs: torchvision's nn.MultiheadAttention through LXT's own patch, timm's
  Attention and Hugging Face's ViT/DeiT/DINOv2/CLIP attention by detaching the query and key projections with
  LXT's `stop_gradient`;
- linear and convolution layers: Zennit's Gamma rule (`--lin-gamma`, `--conv-gamma`) in LXT's Gradient x Input
  form (LXT's patched Zennit hook, here as a subclass instead of a patch of Zennit itself);
- CLIP (image-text bundles): the unit-length normalization of the image embedding gets the identity rule too.
Relevance = input x gradient at the network's input (after deepprobe's normalization wrapper), summed over colour
channels; the output relevance is the explained logit.

LXT 2.1's `lxt.efficient/__init__.py` imports its LLM patches, whose BERT module fails to import with
transformers 5; the ViT rules do not need them, so `lxt_rules()` loads LXT's rule modules without that file.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from types import SimpleNamespace

import torch
from torch import nn

from ..errors import DeepprobeError
from ..options.explain import Options
from .attention_capture import _eager, _inner, _is_hf

_D = Options()
INSTALL = "pip install --no-deps lxt==2.1 (with zennit; LXT's other requirements are for language models)"
_ACTIVATIONS = {"GELU", "GELUTanh", "QuickGELU", "GELUActivation", "QuickGELUActivation", "NewGELUActivation",
                "GELUTanhActivation", "SiLU", "SiLUActivation"}


def lxt_rules() -> SimpleNamespace:
    """LXT's efficient-mode rule modules (patches, rules, zennit_patches), importable with transformers 5."""
    spec = importlib.util.find_spec("lxt")
    if spec is None or spec.submodule_search_locations is None:
        raise DeepprobeError(f"attnlrp needs LXT: {INSTALL}")
    if "lxt.efficient" not in sys.modules:
        package = types.ModuleType("lxt.efficient")  # the package without its __init__ (see the module docstring)
        package.__path__ = [f"{spec.submodule_search_locations[0]}/efficient"]
        sys.modules["lxt.efficient"] = package
    try:
        return SimpleNamespace(**{name: importlib.import_module(f"lxt.efficient.{name}")
                                  for name in ("patches", "rules", "zennit_patches")})
    except ImportError as exc:
        raise DeepprobeError(f"attnlrp needs LXT and Zennit ({exc}): {INSTALL}") from None


def _gamma_hook(lxt):
    """Zennit's Gamma rule computing in LXT's Gradient x Input convention (LXT's patched hook methods)."""
    from zennit.rules import Gamma

    return type("GradientInputGamma", (Gamma,), {"forward": lxt.zennit_patches.forward,
                                                  "backward": lxt.zennit_patches.backward})


# ------------------------------------------------------------------------------------------ patching
@contextlib.contextmanager
def _instance_patches(patches: list[tuple[nn.Module, dict]]):
    """Set attributes on module instances (forward, original_forward) while open; remove them after."""
    done = []
    try:
        for module, attributes in patches:
            for name, value in attributes.items():
                if name in module.__dict__:
                    raise DeepprobeError(f"attnlrp: {type(module).__name__} already has an instance {name!r}")
                object.__setattr__(module, name, value)
                done.append((module, name))
        yield
    finally:
        for module, name in reversed(done):
            object.__delattr__(module, name)


def _detach_output(lxt):
    return lambda _m, _i, out: lxt.rules.stop_gradient(out)


def _query_key_modules(model: nn.Module) -> list[nn.Module]:
    """Modules whose outputs are the attention's queries and keys (timm: q_norm/k_norm after the fused qkv;
    Hugging Face: q_proj/k_proj, or query/key in older releases)."""
    found = []
    for module in model.modules():
        if hasattr(module, "fused_attn") and hasattr(module, "q_norm") and hasattr(module, "k_norm"):
            found += [module.q_norm, module.k_norm]
        for q, k in (("q_proj", "k_proj"), ("query", "key")):
            if (type(module).__name__.endswith("Attention") and isinstance(getattr(module, q, None), nn.Linear)
                    and isinstance(getattr(module, k, None), nn.Linear)):
                found += [getattr(module, q), getattr(module, k)]
    return found


def _patches(lxt, model: nn.Module) -> list[tuple[nn.Module, dict]]:
    out = []
    for module in model.modules():
        name = type(module).__name__
        if isinstance(module, nn.LayerNorm):
            out.append((module, {"forward": lxt.patches.layer_norm_forward.__get__(module)}))
        elif name in _ACTIVATIONS:
            out.append((module, {"original_forward": module.forward,
                                 "forward": lxt.patches.non_linear_forward.__get__(module)}))
        elif isinstance(module, nn.MultiheadAttention):
            out.append((module, {"original_forward": module.forward,
                                 "forward": lxt.patches.cp_multi_head_attention_forward.__get__(module)}))
    return out


def _wrappers(probe) -> list[nn.Module]:
    """probe.net and the deepprobe wrappers under it, outermost first, down to the user's network."""
    chain = [probe.net]
    while (type(chain[-1]).__module__.startswith("deepprobe") and isinstance(getattr(chain[-1], "net", None), nn.Module)):
        chain.append(chain[-1].net)
    return chain


def _clip_head(probe) -> nn.Module | None:
    return next((m for m in _wrappers(probe) if type(m).__name__ == "ZeroShotCLIP"), None)


def input_module(probe) -> nn.Module:
    """The module that receives the normalized image (the one under deepprobe's Normalized wrapper), where
    relevance is read: the normalization `(x - mean) / std` is not a layer with a relevance rule."""
    from ..models.preprocess import Normalized

    chain = _wrappers(probe)
    for outer, inner in zip(chain, chain[1:]):
        if isinstance(outer, Normalized):
            return inner
    return chain[-1]


def check_model(probe) -> nn.Module:
    """The transformer to explain, or one line naming what AttnLRP does not cover."""
    tower = _inner(probe)
    if not (_query_key_modules(tower) or any(isinstance(m, nn.MultiheadAttention) for m in tower.modules())):
        raise DeepprobeError(f"attnlrp explains vision transformers (timm ViT/DeiT, torchvision ViT, Hugging Face "
                             f"ViT/DeiT/DINOv2/CLIP); {probe.spec} has no attention layers it knows: use --method lrp")
    bad = sorted({type(m).__name__ for m in tower.modules() if type(m).__name__ in ("SwiGLU", "Dinov2SwiGLUFFN",
                                                                                     "GluMlp", "SwiGLUPacked")})
    if bad:
        raise DeepprobeError(f"attnlrp does not cover gated MLPs ({', '.join(bad)}) in {probe.spec}")
    return tower


@contextlib.contextmanager
def attnlrp_rules(probe, conv_gamma: float = _D.conv_gamma, lin_gamma: float = _D.lin_gamma):
    """While open, a forward + backward pass of `probe.net` computes AttnLRP (relevance = input x gradient)."""
    lxt = lxt_rules()
    model = check_model(probe)
    head = _clip_head(probe)
    extra = [(head, {"image_features": _clip_image_features(lxt, head)})] if head is not None else []
    with transformer_rules(lxt, model, probe.net, conv_gamma, lin_gamma, extra):
        yield


@contextlib.contextmanager
def transformer_rules(lxt, model: nn.Module, root: nn.Module, conv_gamma: float, lin_gamma: float,
                      extra_patches: list | None = None):
    """LXT's rules on the layers of `model` (patches, query/key detaching, Gamma hooks registered from `root`),
    removed when the context closes."""
    composite = _gamma_composite(lxt, model, conv_gamma, lin_gamma)
    patches = _patches(lxt, model) + list(extra_patches or [])
    hooks = [m.register_forward_hook(_detach_output(lxt)) for m in _query_key_modules(model)]
    try:
        with _instance_patches(patches), (_eager(model) if _is_hf(model) else contextlib.nullcontext()), \
                composite.context(root):
            yield
    finally:
        for h in hooks:
            h.remove()


def _gamma_composite(lxt, model: nn.Module, conv_gamma: float, lin_gamma: float):
    """Gamma on convolutions and on the linear layers outside attention (MLPs, heads); the attention's own
    projections keep the plain Gradient x Input rule. That is what LXT's torchvision recipe computes: torchvision's
    nn.MultiheadAttention applies its projections functionally, so its Linear-typed rule never reaches them."""
    from zennit.core import Composite

    gamma = _gamma_hook(lxt)
    conv, dense = gamma(gamma=float(conv_gamma)), gamma(gamma=float(lin_gamma))
    inside = {id(m) for a in model.modules() if _is_attention(a) for m in a.modules() if m is not a}

    def rule(_ctx, _name, module):  # Gamma 0 is the plain gradient x input: no hook, no extra passes
        if isinstance(module, nn.Conv2d) and conv_gamma:
            return conv
        if isinstance(module, nn.Linear) and id(module) not in inside and lin_gamma:
            return dense
        return None

    return Composite(module_map=rule)


def _is_attention(module: nn.Module) -> bool:
    return (isinstance(module, nn.MultiheadAttention) or hasattr(module, "fused_attn")
            or type(module).__name__.endswith(("Attention", "SelfAttention")))


def _clip_image_features(lxt, head):
    from ..models.clip import _embedding

    def image_features(pixel_values: torch.Tensor) -> torch.Tensor:
        e = _embedding(head.net.get_image_features(pixel_values=pixel_values)).float()
        return e / lxt.rules.stop_gradient(e.norm(dim=-1, keepdim=True).clamp(min=1e-12))  # as F.normalize

    return image_features


def attnlrp_relevance(probe, x: torch.Tensor, targets: torch.Tensor, conv_gamma: float = _D.conv_gamma,
                      lin_gamma: float = _D.lin_gamma) -> tuple[torch.Tensor, torch.Tensor]:
    """(relevance at the network's input (N,C,H,W) = input x gradient, the explained logits (N,)).

    One backward pass of the summed target logits: each image's logit depends only on that image in eval mode.
    """
    x = x.to(probe.device)
    leaves: list[torch.Tensor] = []

    def as_leaf(_m, args):
        leaves.append(args[0].detach().requires_grad_(True))
        return (leaves[-1], *args[1:])

    handle = input_module(probe).register_forward_pre_hook(as_leaf)
    try:
        with attnlrp_rules(probe, conv_gamma, lin_gamma), torch.enable_grad():
            logits = probe.net(x)
            score = logits.float().gather(1, targets.to(logits.device).view(-1, 1))[:, 0]
            (grad,) = torch.autograd.grad(score.sum(), leaves[-1])
    finally:
        handle.remove()
    return (leaves[-1] * grad).detach(), score.detach()


def attnlrp(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None,
            conv_gamma: float = _D.conv_gamma, lin_gamma: float = _D.lin_gamma) -> torch.Tensor:
    """AttnLRP maps (N,H,W): relevance summed over colour channels, signed, capped at the top 1% of |relevance|."""
    from .lrp import cap_both_ends

    if layer not in (None, ""):
        raise DeepprobeError("attnlrp propagates relevance down to the input pixels; --layer does not apply to it")
    relevance, _ = attnlrp_relevance(probe, x, targets, conv_gamma, lin_gamma)
    return cap_both_ends(relevance.sum(1))


def attnlrp_text_relevance(probe, x: torch.Tensor, target=None, conv_gamma: float = _D.conv_gamma,
                           lin_gamma: float = _D.lin_gamma) -> list:
    """CLIP: per image, the AttnLRP relevance of each token of its target prompt (None: the predicted prompt).

    The text tower under the same rules, the image embedding fixed (the prompt is what is explained): score = the
    matched image-text logit, with the text embedding's L2 normalization under the identity rule; relevance =
    token embedding x gradient, summed over the width, for the tokens between start and end (as `chefer`'s words).
    """
    from .clip import TextRelevance, pooled_positions, prompt_inputs

    head, targets, texts, image, enc = prompt_inputs(probe, x, target)
    lxt = lxt_rules()
    model = head.net
    leaves: list[torch.Tensor] = []

    def as_leaf(_m, _i, out):
        leaves.append(out.detach().requires_grad_(True))
        return leaves[-1]

    hook = model.text_model.embeddings.register_forward_hook(as_leaf)
    try:
        with transformer_rules(lxt, model, model, conv_gamma, lin_gamma), torch.enable_grad():
            out = model.text_model(**enc)
            text = model.text_projection(out.pooler_output).float()
            text = text / lxt.rules.stop_gradient(text.norm(dim=-1, keepdim=True).clamp(min=1e-12))
            score = (head.scale() * (image * text).sum(-1)).sum()
            (grad,) = torch.autograd.grad(score, leaves[-1])
    finally:
        hook.remove()
    tokens = (leaves[-1] * grad).sum(-1).detach()  # (N, T)
    eot = pooled_positions(enc["input_ids"], getattr(model.config.text_config, "eos_token_id", None))
    result = []
    for i, prompt in enumerate(texts):
        end = int(eot[i])
        ids = enc["input_ids"][i, 1:end].tolist()
        result.append(TextRelevance(prompt, [head.tokenizer.decode([t]).strip() for t in ids],
                                    tokens[i, 1:end].tolist()))
    return result
