"""Explanations for embedders: which regions make two images alike (similarity maps), and attention maps.

An embedder has no class to explain. A retrieval user asks why two images lie close, so the number explained is
their cosine similarity s(x) = <f(x), f(ref)> / (|f(x)| |f(ref)|), seen as a one-output classifier
(`explain.tasks.score_view`): Grad-CAM, Chefer's relevance and the captum methods then run on it unchanged.
`similarity` picks the natural one: Chefer's gradient-weighted attention on a vision transformer, Grad-CAM on a
CNN (Grad-CAM at --layer on either).

One deliberate change: the norm |f(x)| of the explained image's embedding is held constant in the gradient.
The cosine of an image with itself is at its maximum, so its gradient is zero and the map of an image against
itself (or a near copy) would vanish. With the norm held, the gradient is the reference's direction f(ref)/|f(ref)|;
for a CNN that pools its last map, Grad-CAM then gives each position's share of the dot product (the similarity
decomposition of Stylianou et al. 2019). The value explained is still the cosine.

`attention` and `rollout` need no reference: on a ViT embedder `attention` is DINO's figure (the CLS token's
attention over the patches, per head, in the last block).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import DeepprobeError
from ..models.embedding import embed
from ..options.explain import CAM_METHODS, CLASS_FREE
from .maps import class_maps, method_function

# methods that explain one number per image: they explain the similarity to a reference on an embedder
SCORE_METHODS = ("similarity", "gradcam", "gradcam++", "hirescam", "saliency", "ig", "smoothgrad", "occlusion",
                 "guided-backprop", "chefer")


def similarity_score(reference: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """(N,D) embeddings -> (N,) cosine with `reference` ((1,D) or (N,D)), the own norm held in the gradient."""
    ref = F.normalize(reference.detach().float(), dim=-1)

    def score(embeddings: torch.Tensor) -> torch.Tensor:
        e = embeddings.float()
        return (e * ref.to(e.device)).sum(-1) / e.norm(dim=-1).detach().clamp_min(1e-12)
    return score


def is_vision_transformer(probe) -> bool:
    """True when the attention capture finds self-attention layers and a patch grid (no forward pass needed)."""
    from .attention_capture import _hf_attention_modules, _hf_grid, _inner, _is_hf, _timm_attention_modules, _timm_grid

    model = _inner(probe)
    size = probe.input_size or (224, 224)
    if _is_hf(model):
        return bool(_hf_attention_modules(model)) and _hf_grid(model, size) is not None
    return (getattr(model, "num_prefix_tokens", None) is not None and bool(_timm_attention_modules(model))
            and _timm_grid(model, size) is not None)


def resolve_method(probe, method: str, layer: str | None = None) -> str:
    """`similarity` -> chefer on a vision transformer (gradcam at an explicit --layer), gradcam otherwise."""
    if method != "similarity":
        return method
    return "chefer" if layer in (None, "") and is_vision_transformer(probe) else "gradcam"


def explain_similarity(probe, x: torch.Tensor, reference: torch.Tensor, method: str = "similarity",
                       layer: str | None = None, **method_options) -> torch.Tensor:
    """(N,H,W) maps in [0,1] of where each image of `x` resembles `reference` ((1,3,H,W) or one image per row of
    `x`, [0,1]); the explained number is the cosine similarity of their embeddings."""
    from .tasks import score_view

    if method not in SCORE_METHODS:
        raise DeepprobeError(f"{method} does not explain a similarity; with a reference use one of "
                             f"{', '.join(SCORE_METHODS)}")
    x = x.to(probe.device)
    reference = reference.to(probe.device)
    if reference.dim() == 3:
        reference = reference.unsqueeze(0)
    if reference.shape[0] not in (1, x.shape[0]):
        raise DeepprobeError(f"got {reference.shape[0]} reference images for {x.shape[0]} images")
    with torch.no_grad():
        refs = embed(probe, reference)
    method = resolve_method(probe, method, layer)
    maps = []
    for i in range(x.shape[0]):  # one at a time: captum's methods run many copies of one image in a batch
        view = score_view(probe, similarity_score(refs[i if refs.shape[0] > 1 else 0][None]))
        maps.append(class_maps(view, x[i:i + 1], method, target=0, layer=layer, **method_options))
    return torch.cat(maps)


def explain_embedder(probe, x: torch.Tensor, method: str, target=None, layer: str | None = None,
                     reference: torch.Tensor | None = None, **method_options) -> torch.Tensor:
    """`deepprobe.explain` on an embedder: attention and rollout as on any ViT; every other method explains
    the cosine similarity to `reference`."""
    if target is not None:
        raise DeepprobeError(f"{probe.spec} is an embedder: it has no classes to target; give a reference "
                             "image instead (--reference IMG, reference= in Python)")
    if method in CLASS_FREE:
        return class_maps(probe, x, method, layer=layer, **method_options)
    method_function(method)  # unknown names: the full list
    if reference is None:
        raise DeepprobeError(f"{method} on an embedder explains the similarity of two images: give "
                             "--reference IMG (reference= in Python), or use attention / rollout")
    return explain_similarity(probe, x, reference, method, layer=layer, **method_options)


def similarity(probe, x: torch.Tensor, targets=None, layer: str | None = None) -> torch.Tensor:
    """The `similarity` entry of the method registry: it needs an embedder and a reference image, which
    `explain()` sends to `explain_similarity`; reaching this means the model is not an embedder."""
    raise DeepprobeError(f"similarity explains the cosine similarity of an embedder's embeddings; {probe.spec} is "
                         f"not an embedder (use {', '.join(m for m in CAM_METHODS)} or a captum method)")
