"""Explanations read from a vision transformer's attention: rollout, Chefer's gradient-weighted relevance, raw heads.

Each method has a pure function on attention tensors (tested against hand computations) and a thin method
`fn(probe, x, targets, layer=None, **options) -> (N, h, w)` over the patch grid that `explain()` dispatches to
(it resizes and scales). All of them work on whole batches: every step is a batched matrix product.
"""
from __future__ import annotations

import torch

from ..errors import DeepprobeError
from .attention_capture import capture_attention, patch_tokens_to_grid

HEAD_FUSIONS = ("mean", "max", "min")
# Defaults of the method options (named like the CLI flags --head-fusion, --discard-ratio, --head).
HEAD_FUSION = "mean"
DISCARD_RATIO = 0.0


# ------------------------------------------------------------------------------------------ pure functions
def fuse_heads(attn: torch.Tensor, head_fusion: str = HEAD_FUSION) -> torch.Tensor:
    """(N, heads, T, T) -> (N, T, T) by mean, max or min over heads."""
    if head_fusion == "mean":
        return attn.mean(1)
    if head_fusion == "max":
        return attn.amax(1)
    if head_fusion == "min":
        return attn.amin(1)
    raise DeepprobeError(f"unknown head fusion {head_fusion!r}; choose one of {', '.join(HEAD_FUSIONS)}")


def discard_lowest(a: torch.Tensor, ratio: float, prefix: int = 1) -> torch.Tensor:
    """Zero the lowest `ratio` of each row's attentions to patch tokens; prefix columns (CLS...) are never dropped.

    Why per row and never the CLS column: a row is one token's distribution, and the CLS column carries much
    of every row's mass — dropping it (as a whole-matrix threshold can) changes what the rollout measures.
    """
    if not 0.0 <= ratio < 1.0:
        raise DeepprobeError(f"discard ratio must be in [0, 1), got {ratio}")
    patches = a[..., prefix:]
    k = int(patches.shape[-1] * ratio)
    if k == 0:
        return a
    lowest = patches.topk(k, dim=-1, largest=False).indices
    patches = patches.scatter(-1, lowest, 0.0)
    return torch.cat([a[..., :prefix], patches], dim=-1)


def rollout_tokens(attentions: list[torch.Tensor], head_fusion: str = HEAD_FUSION,
                   discard_ratio: float = DISCARD_RATIO, prefix: int = 1) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) on per-layer (N, heads, T, T) maps -> (N, T - prefix).

    Per layer: fuse heads, optionally discard the lowest attentions, A' = 0.5 A + 0.5 I with rows
    renormalized; R = A'_L ... A'_1 (bottom-up product); read the CLS row over the patch tokens
    (with no prefix token, the mean row: what an average-pooled head reads).
    Only one row of R is read, so it is computed top-down as a row vector times each matrix:
    L (T x T) vector products instead of L - 1 matrix products — the same numbers, T times fewer operations.
    """
    if not attentions:
        raise DeepprobeError("rollout needs at least one attention layer")

    def mixed(attn: torch.Tensor) -> torch.Tensor:
        a = discard_lowest(fuse_heads(attn.float(), head_fusion), discard_ratio, prefix)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        return a / a.sum(-1, keepdim=True)

    row = _readout_row(mixed(attentions[-1]), prefix)
    for attn in reversed(attentions[:-1]):
        row = (row.unsqueeze(1) @ mixed(attn)).squeeze(1)
    return row[:, prefix:]


def chefer_tokens(attentions: list[torch.Tensor], gradients: list[torch.Tensor], prefix: int = 1) -> torch.Tensor:
    """Chefer et al. 2021 (generic, hook-only): R = I; per layer R <- R + mean_heads((grad * A)^+) @ R.

    `gradients` are d(target logit)/d(attention) per layer; returns the CLS row over patches, (N, T - prefix).
    """
    if not attentions or len(attentions) != len(gradients):
        raise DeepprobeError("chefer needs one gradient per attention layer")
    return relevance_tokens([chefer_cam(a, g) for a, g in zip(attentions, gradients)], prefix)


def chefer_cam(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """One layer's gradient-weighted attention, mean_heads((grad * A)^+): (N, heads, T, T) -> (N, T, T)."""
    return (grad.float() * attn.float()).clamp(min=0).mean(1)


def relevance_tokens(cams: list[torch.Tensor], prefix: int = 1) -> torch.Tensor:
    """R = (I + C_L) ... (I + C_1) from per-layer (N, T, T) cams, CLS row over patches; computed top-down
    as a row vector (v <- v + v @ C_l), which equals the bottom-up R <- R + C_l @ R."""
    last = cams[-1].float()
    eye = torch.eye(last.shape[-1], device=last.device, dtype=last.dtype)
    return _relevance_from(_readout_row(eye + last, prefix), cams)[:, prefix:]


def relevance_rows(cams: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
    """Row `rows[n]` of R = (I + C_L) ... (I + C_1) for each item n, (N, T): e.g. the end-of-text token a
    text transformer pools."""
    last = cams[-1].float()
    start = torch.nn.functional.one_hot(rows.to(last.device).long(), last.shape[-1]).to(last.dtype)
    return _relevance_from(start + (start.unsqueeze(1) @ last).squeeze(1), cams)


def _relevance_from(row: torch.Tensor, cams: list[torch.Tensor]) -> torch.Tensor:
    """Carry a row of (I + C_L) down through the lower layers: v <- v + v @ C_l."""
    for cam in reversed(cams[:-1]):
        row = row + (row.unsqueeze(1) @ cam.float()).squeeze(1)
    return row


def _readout_row(r: torch.Tensor, prefix: int) -> torch.Tensor:
    """(N, T, T) -> (N, T): the CLS row, or the mean row when the model has no prefix token."""
    return r[:, 0] if prefix > 0 else r.mean(1)


# ------------------------------------------------------------------------------------------ methods
def _no_layer(method: str, layer) -> None:
    if layer not in (None, ""):
        raise DeepprobeError(f"{method} combines every attention layer; --layer does not apply to it")


def rollout(probe, x: torch.Tensor, targets: torch.Tensor | None = None, layer: str | None = None,
            head_fusion: str | None = None, discard_ratio: float | None = None) -> torch.Tensor:
    """Attention rollout maps (N, h, w) over the patch grid; class-agnostic (targets are not used)."""
    _no_layer("rollout", layer)
    head_fusion = head_fusion or HEAD_FUSION
    discard_ratio = DISCARD_RATIO if discard_ratio is None else float(discard_ratio)
    discard_lowest(fuse_heads(torch.zeros(1, 1, 2, 2), head_fusion), discard_ratio)  # check before the pass
    # heads are fused as each layer runs: (N, 1, T, T) per layer is kept, not (N, heads, T, T)
    cap = capture_attention(probe, x, method="rollout", on_attention=lambda a: fuse_heads(a, head_fusion)[:, None])
    tokens = rollout_tokens(cap.attentions, head_fusion, discard_ratio, cap.prefix)
    return patch_tokens_to_grid(tokens, 0, cap.grid)


def chefer(probe, x: torch.Tensor, targets: torch.Tensor | None = None, layer: str | None = None) -> torch.Tensor:
    """Gradient-weighted attention relevance (N, h, w) for each image's target class (None: the predicted one)."""
    _no_layer("chefer", layer)
    if targets is None:
        from .maps import resolve_targets

        targets = resolve_targets(probe, x.to(probe.device), None)
    # each layer is reduced to its (N, T, T) cam as its gradient arrives; no attention is stored
    cap = capture_attention(probe, x, targets, method="chefer", on_attention=lambda a: None, on_gradient=chefer_cam)
    return patch_tokens_to_grid(relevance_tokens(cap.gradients, cap.prefix), 0, cap.grid)


def block_index(layer, count: int, method: str = "attention") -> int:
    """--layer for `attention` and `legrad`: a block index (negative counts from the end), default the last one."""
    if layer in (None, ""):
        return count - 1
    try:
        i = int(layer)
    except (TypeError, ValueError):
        raise DeepprobeError(f"{method} takes --layer as a block index (0..{count - 1} or -1), "
                             f"got {layer!r}") from None
    if not -count <= i < count:
        raise DeepprobeError(f"{method} layer {i} out of range: the model has {count} attention layers")
    return i % count


def attention_heads(probe, x: torch.Tensor, layer: str | int | None = None, resize: bool = True) -> torch.Tensor:
    """The CLS token's attention over the patches, one map per head (the DINO figure): (N, heads, H, W).

    `layer` picks the block (default: the last). With `resize` (default) each head's map is resized to the
    input and min-max scaled to [0,1] like `explain()` does, and the tensor shows itself in Jupyter as DINO's
    figure (`HeadMaps`); `resize=False` gives the raw (N, heads, h, w) grid. Any ViT: timm, HF ViT/DINOv2/CLIP
    towers, with or without a classifier.
    """
    from .maps import to_input_size

    # keep only what can be read: each layer's CLS row and mean row, (N, heads, T) each
    cap = capture_attention(probe, x, method="attention", on_attention=lambda a: (a[:, :, 0], a.mean(2)))
    cls_row, mean_row = cap.attentions[block_index(layer, len(cap.attentions))]
    maps = patch_tokens_to_grid(cls_row if cap.prefix > 0 else mean_row, cap.prefix, cap.grid)
    if not resize:
        return maps
    from .shown_maps import HeadMaps

    n, heads = maps.shape[:2]
    shown = to_input_size(maps.flatten(0, 1), x.shape[-2:]).view(n, heads, *x.shape[-2:])
    return HeadMaps.wrap(shown, bundle=probe, images=x, layer=layer)


def attention(probe, x: torch.Tensor, targets: torch.Tensor | None = None, layer: str | None = None,
              head: int | None = None) -> torch.Tensor:
    """Raw CLS self-attention of one block (default the last) as (N, h, w): mean over heads, or `head`."""
    maps = attention_heads(probe, x, layer=layer, resize=False)
    if head is None:
        return maps.mean(1)
    if not -maps.shape[1] <= int(head) < maps.shape[1]:
        raise DeepprobeError(f"head {head} out of range: the model has {maps.shape[1]} heads")
    return maps[:, int(head)]
