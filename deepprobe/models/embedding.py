"""Embedders (task `embedding`): head-less backbones whose output is an image embedding, not class logits.

DINO and DINOv2 (timm ViTs with `num_classes=0`, or Hugging Face `Dinov2Model`/`ViTModel`), CLIP's and SigLIP's
image towers and any timm CNN without its classifier map an image to one vector; what users compare is the cosine
similarity of two such vectors (retrieval, k-NN classification). `EmbedderNet` gives them one calling convention,
(N,3,H,W) normalized pixels -> (N,D) embeddings, so the techniques (feature attacks, similarity maps, inversion,
maximization) see a tensor like a classifier's logits and never read model-specific output objects.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .tasks import EMBEDDING, require_task

# Hugging Face model types whose embedding is the class token after the final norm: ViTModel's pooler is an
# extra dense+tanh layer that DINO's checkpoints do not train (transformers initializes it at random)
CLS_EMBEDDING = ("vit", "deit", "dinov2", "dinov2_with_registers")
# Hugging Face vision towers and backbones: what `hf:DIR` loads as an embedder (besides classifiers, CLIP, DETR)
VISION_TOWERS = ("clip_vision_model", "siglip_vision_model", "siglip2_vision_model")
HF_EMBEDDERS = ("Dinov2Model, ViTModel, CLIPVisionModel(WithProjection), SiglipVisionModel, or any image "
                "backbone saved as ...Model")
SIGLIP_MEAN_STD = ((0.5,) * 3, (0.5,) * 3)


class EmbedderNet(nn.Module):
    """A backbone seen as (N,3,H,W) normalized pixels -> (N,D) embeddings (`read` picks them from its output)."""

    task = EMBEDDING

    def __init__(self, net: nn.Module, read: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.net = net
        self.read = read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.read(self.net, x) if self.read is not None else self.net(x)
        if out.dim() > 2:  # a backbone that keeps a 1x1 map after global pooling
            out = out.flatten(1)
        return out


def embed(bundle, images: torch.Tensor) -> torch.Tensor:
    """(N,D) unit-length embeddings of [0,1] images, float32 (differentiable: the caller decides about no_grad)."""
    require_embedder(bundle, "embed")
    return F.normalize(bundle.net(images.to(bundle.device)).float(), dim=-1)


def require_embedder(bundle, what: str) -> None:
    """One clear line when `what` is asked of a model that does not give embeddings."""
    require_task(bundle, what, EMBEDDING)


# ------------------------------------------------------------------------------------------ Hugging Face
def is_hf_embedder(config: dict) -> bool:
    """True for a saved vision tower or backbone (`...Model`), False for classifiers and other heads."""
    if config.get("model_type") in VISION_TOWERS:
        return True
    archs = config.get("architectures") or []
    return bool(archs) and str(archs[0]).endswith(("Model", "ModelWithProjection"))


def _hf_read(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The embedding of a Hugging Face model: projected image embeddings (CLIP/SigLIP with their text tower or
    a projection), the class token (ViT, DINOv2), else the pooled output."""
    if hasattr(model, "get_image_features"):  # a whole SigLIP-style model: its image tower and projection
        out = model.get_image_features(pixel_values=pixels)
        return out if isinstance(out, torch.Tensor) else out.pooler_output
    # any input size (dream's octaves): ViT, CLIP and SigLIP interpolate their position embeddings when asked,
    # DINOv2 always does
    size_free = {"interpolate_pos_encoding": True} if "interpolate_pos_encoding" in _forward_arguments(model) else {}
    out = model(pixel_values=pixels, **size_free)
    if getattr(out, "image_embeds", None) is not None:
        return out.image_embeds
    if model.config.model_type in CLS_EMBEDDING or getattr(out, "pooler_output", None) is None:
        return out.last_hidden_state[:, 0]
    return out.pooler_output


@functools.cache
def _arguments_of(forward) -> frozenset[str]:
    return frozenset(inspect.signature(forward).parameters)


def _forward_arguments(model: nn.Module) -> frozenset[str]:
    return _arguments_of(type(model).forward)


def load_hf_embedder(folder: Path, config: dict):
    """(EmbedderNet, labels None, Preprocess) for a save_pretrained vision tower or backbone."""
    import transformers

    from .clip import CLIP_MEAN, CLIP_STD
    from .hf_processor import image_preprocess, load_saved
    from .preprocess import IMAGENET_MEAN, IMAGENET_STD

    arch = (config.get("architectures") or [""])[0]
    loader = getattr(transformers, arch, None) if arch else None
    if loader is None or not hasattr(loader, "from_pretrained"):
        loader = transformers.AutoModel
    model = load_saved(loader, folder, f"cannot load {folder} as an embedder ({HF_EMBEDDERS})",
                       errors=(OSError, ValueError, KeyError), attn_implementation="eager")
    vision = getattr(model.config, "vision_config", None) or model.config
    size = getattr(vision, "image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else int(size)
    kind = str(getattr(vision, "model_type", ""))
    mean, std = ((CLIP_MEAN, CLIP_STD) if kind.startswith("clip") else
                 SIGLIP_MEAN_STD if kind.startswith("siglip") else (IMAGENET_MEAN, IMAGENET_STD))
    return EmbedderNet(model.eval(), _hf_read), None, image_preprocess(folder, size, mean, std)
