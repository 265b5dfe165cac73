"""LeGrad (Bousselham et al. 2024) on timm vision transformers, as torch-cam 0.5 computes it.

For each chosen block l, the block's tokens are read out as if the network ended there: s^l = head(norm(mean of
the tokens)) (torch-cam's projection for torchvision ViTs: the mean over all tokens, the final norm, the head).
The gradient of the target's s^l with respect to block l's own post-softmax attention, positive part, averaged
over heads and queries, gives one value per key token; patch keys form the block's map, and the maps of the
chosen blocks are averaged. One forward pass, then one short backward pass per block (from s^l down to block l's
attention only); the whole batch at once, on the model's device.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import DeepprobeError
from .attention_capture import _inner, _timm_attention_modules, _timm_grid, _unfused, patch_tokens_to_grid
from .transformer import block_index

BLOCKS = 4  # blocks averaged by default: the last four (torch-cam's documented example)


def _chosen(count: int, layer) -> range:
    """--layer for legrad: the first block averaged (negative counts from the end); default the last four."""
    if layer in (None, ""):
        return range(max(0, count - BLOCKS), count)
    return range(block_index(layer, count, "legrad"), count)


def _project(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Class scores of one block's tokens: head(fc_norm(norm(mean over tokens)))."""
    pooled = tokens.mean(dim=1)
    for name in ("norm", "fc_norm"):
        norm = getattr(model, name, None)
        if isinstance(norm, nn.Module):
            pooled = norm(pooled)
    return model.head(pooled)


def legrad(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """LeGrad maps (N,h,w) over the patch grid."""
    if targets is None:
        raise DeepprobeError("legrad needs a target class")
    model = _inner(probe)
    blocks = getattr(model, "blocks", None)
    attention = _timm_attention_modules(model)
    if (not isinstance(blocks, nn.Sequential) or len(attention) != len(blocks) or not isinstance(
            getattr(model, "head", None), nn.Linear) or getattr(model, "num_prefix_tokens", None) is None):
        raise DeepprobeError(f"legrad needs a timm ViT with one attention layer per block and a linear head; "
                             f"{probe.spec} is not one")
    chosen = _chosen(len(blocks), layer)
    probs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}
    hooks = []
    for i in chosen:
        hooks.append(attention[i].attn_drop.register_forward_hook(lambda _m, _a, out, i=i: probs.__setitem__(i, out)))
        hooks.append(blocks[i].register_forward_hook(lambda _m, _a, out, i=i: outputs.__setitem__(i, out)))
    try:
        with _unfused(attention), torch.enable_grad():
            probe.net(x.detach().requires_grad_(True))  # frozen weights: the input carries the graph
    finally:
        for h in hooks:
            h.remove()
    prefix = int(model.num_prefix_tokens)
    maps = []
    with torch.enable_grad():
        for i in chosen:
            score = _project(model, outputs[i]).float().gather(1, targets.to(x.device).view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, probs[i], retain_graph=i != chosen[-1])
            maps.append(grad.clamp(min=0).mean(dim=(1, 2))[:, prefix:].detach())
    grid = _timm_grid(model, (int(x.shape[-2]), int(x.shape[-1])))
    return patch_tokens_to_grid(torch.stack(maps).mean(0).float(), 0, grid)
