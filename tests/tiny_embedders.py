"""Embedders for the tests: tiny random ViTs (no ViT weights exist offline) and the bundled EfficientNet-Lite0
without its classifier (real ImageNet features, so similarity, retrieval and k-NN behave as on a real backbone).

- `vit()`: a timm ViT with no head (32 px, 8 px patches, 4 heads), for `python:tiny_embedders:vit`;
- `save_hf(arch, folder)`: a tiny random Hugging Face vision tower or backbone saved with save_pretrained;
- `save_headless_lite0(path)`: the bundled Lite0 weights in timm naming, classifier dropped (as DINO ships its
  backbones), for `timm:tf_efficientnet_lite0 --weights PATH`;
- `make_gallery(root)`: class folders of mirrored and cropped copies of the example photos.
"""
from __future__ import annotations

from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PHOTOS = ("astronaut", "cat", "coffee", "motorcycle", "rocket")
VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2)
HEADS = 4


def vit(seed: int = 0):
    """A random head-less timm ViT that declares itself an embedder (its (N,32) output looks like logits)."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    net = VisionTransformer(num_classes=0, dynamic_img_size=True, dynamic_img_pad=True, **VIT).eval()
    net.task = "embedding"
    return net


def hf_config(arch: str):
    import transformers as T

    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=64)
    if arch == "Dinov2Model":
        return T.Dinov2Config(image_size=28, patch_size=7, **common)
    if arch == "ViTModel":
        return T.ViTConfig(image_size=32, patch_size=8, **common)
    if arch == "SiglipVisionModel":
        return T.SiglipVisionConfig(image_size=32, patch_size=8, **common)
    if arch == "SiglipModel":  # the whole model: it embeds images with its image tower
        text = dict(vocab_size=16, bos_token_id=1, eos_token_id=2, pad_token_id=0, **common)
        return T.SiglipConfig(text_config=text, vision_config=dict(image_size=32, patch_size=8, **common))
    return T.CLIPVisionConfig(image_size=32, patch_size=8, projection_dim=16, **common)


def save_hf(arch: str, folder: Path, seed: int = 0) -> Path:
    """A tiny random `arch` (Dinov2Model, ViTModel, CLIPVisionModel, CLIPVisionModelWithProjection,
    SiglipVisionModel, SiglipModel) saved as a user saves a real checkpoint."""
    import transformers

    torch.manual_seed(seed)
    getattr(transformers, arch)(hf_config(arch)).eval().save_pretrained(folder)
    return folder


def save_headless_lite0(path: Path) -> Path:
    """The bundled ImageNet Lite0 as a backbone: timm's names, no classifier."""
    from safetensors.torch import save_file

    import deepprobe as dp

    net = dp.load_model("efficientnet_lite0", device="cpu").inner
    save_file({k: v.contiguous() for k, v in net.state_dict().items() if not k.startswith("classifier.")}, str(path))
    return path


def make_gallery(root: Path) -> Path:
    """root/PHOTO/{PHOTO_mirror, PHOTO_crop}.jpg: other views of each example photo, one class per photo."""
    from PIL import Image, ImageOps

    for name in PHOTOS:
        (root / name).mkdir(parents=True, exist_ok=True)
        image = Image.open(EXAMPLES / f"{name}.jpg").convert("RGB")
        w, h = image.size
        ImageOps.mirror(image).save(root / name / f"{name}_mirror.jpg")
        image.crop((w // 10, h // 10, w, h)).save(root / name / f"{name}_crop.jpg")
    return root
