"""The CAMs that weigh channels by forward passes instead of gradients: Score-CAM (Wang et al. 2020) and
Ablation-CAM (Desai & Ramaswamy 2020).

Both cost one forward pass per channel of the layer and image (1280 per photo at Lite0's default layer `bn2`):
the passes run `internal_batch` at a time on the model's device. The map is the base CAM's: ReLU(sum_k w_k A_k)
at the layer's resolution (explain/cam.py owns the layer lookup, the token grid and the activations).
- Score-CAM: each channel, upsampled to the input (bilinear, corners aligned, as pytorch-grad-cam), min-max
  scaled and multiplied into the image, is scored by the target logit; the weights are the softmax of those
  scores over the channels.
- Ablation-CAM: each channel of the layer's output is set to zero (the paper's ablation) and the model run on from
  there; w_k = (y - y_k) / y, the target logit's relative drop. pytorch-grad-cam zeroes the channel too when the
  layer's smallest activation is 0 (any ReLU output, Lite0's `bn2`), and otherwise puts min - 1e7 in it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DeepprobeError
from ..options.explain import Options
from .cam import _as_map, default_cam_layer, layer_output

_D = Options()
SCALE_EPS = 1e-8  # Score-CAM's per-channel min-max guard (pytorch-grad-cam)


def _check(targets, internal_batch) -> int:
    if targets is None:
        raise DeepprobeError("a class activation map needs a target class")
    if int(internal_batch) < 1:
        raise DeepprobeError(f"--internal-batch must be at least 1, got {internal_batch}")
    return int(internal_batch)


def _logits_of(probe, batch: torch.Tensor, target: int) -> torch.Tensor:
    with torch.no_grad():
        return probe.net(batch).float()[:, target]


def scorecam(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None,
             internal_batch: int = _D.internal_batch) -> torch.Tensor:
    """Score-CAM maps (N,h,w) at the layer's resolution; one forward pass per channel and image."""
    chunk = _check(targets, internal_batch)
    acts = layer_output(probe, x, layer or default_cam_layer(probe, x))
    weights = torch.empty(acts.shape[:2], device=acts.device)
    for i in range(x.shape[0]):
        for start in range(0, acts.shape[1], chunk):
            masks = F.interpolate(acts[i, start:start + chunk, None], size=tuple(x.shape[-2:]), mode="bilinear",
                                  align_corners=True)  # (k, 1, H, W)
            flat = masks.flatten(1)
            lo, hi = flat.min(1).values, flat.max(1).values
            masks = (masks - lo[:, None, None, None]) / (hi - lo + SCALE_EPS)[:, None, None, None]
            weights[i, start:start + chunk] = _logits_of(probe, x[i:i + 1] * masks.to(x.dtype), int(targets[i]))
    weights = weights.softmax(dim=1)
    return torch.einsum("nc,nchw->nhw", weights, acts).clamp(min=0)


def ablationcam(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None,
                internal_batch: int = _D.internal_batch) -> torch.Tensor:
    """Ablation-CAM maps (N,h,w) at the layer's resolution; one forward pass per channel and image."""
    chunk = _check(targets, internal_batch)
    layer = layer or default_cam_layer(probe, x)
    raw, logits = _layer_and_logits(probe, x, layer)
    acts = _as_map(probe, x, raw.float(), layer)
    axis = 1 if raw.dim() == 4 else raw.dim() - 1  # channels: (N,C,h,w) maps or (N,T,C) tokens
    original = logits.gather(1, targets.to(logits.device).view(-1, 1))[:, 0]
    replacement: list[torch.Tensor] = []

    def swap(_m, _inputs, output):
        return replacement[0] if isinstance(output, torch.Tensor) else (replacement[0], *output[1:])

    ablated = torch.empty(acts.shape[:2], device=acts.device)
    handle = probe.layer(layer).register_forward_hook(swap)
    try:
        for i in range(x.shape[0]):
            for start in range(0, raw.shape[axis], chunk):
                k = min(chunk, raw.shape[axis] - start)
                batch = raw[i:i + 1].repeat(k, *([1] * (raw.dim() - 1)))
                copies, channels = torch.arange(k, device=raw.device), torch.arange(start, start + k, device=raw.device)
                if axis == 1:
                    batch[copies, channels] = 0  # copy j loses channel start + j
                else:
                    batch[copies, ..., channels] = 0
                replacement[:] = [batch]
                ablated[i, start:start + k] = _logits_of(probe, x[i:i + 1].expand(k, *x.shape[1:]), int(targets[i]))
    finally:
        handle.remove()
    weights = (original[:, None] - ablated) / original[:, None]
    return torch.einsum("nc,nchw->nhw", weights, acts).clamp(min=0)


def _layer_and_logits(probe, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output as the network passes it on (not reshaped: what an ablation replaces) and the logits,
    from one forward pass without autograd."""
    seen: list[torch.Tensor] = []

    def hook(_m, _inputs, output):
        first = output[0] if isinstance(output, (tuple, list)) else output
        if isinstance(first, torch.Tensor):
            seen.append(first.detach().clone())

    handle = probe.layer(layer).register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = probe.net(x).float()
    finally:
        handle.remove()
    if not seen:
        raise DeepprobeError(f"layer {layer!r} never ran (or gave no tensor) in the forward pass; pick another --layer")
    return seen[-1], logits
