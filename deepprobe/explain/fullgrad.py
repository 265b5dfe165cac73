"""FullGrad (Srinivas & Fleuret 2019): the input-gradient term plus every layer's bias-gradient term, summed.

As pytorch-grad-cam computes it: |x * dY/dx| per colour channel, and for every convolution with a bias and every
BatchNorm (bias = beta - mean * gamma / sqrt(var + eps)) |bias * dY/dz| summed over channels, each (image,
channel) map min-max scaled on its own before the sum; everything comes from one forward and one backward pass.
Two differences from pytorch-grad-cam, both so that the same network gives the same map whatever its layer classes:
- layers are found by type, subclasses included (pytorch-grad-cam keeps exactly nn.Conv2d and nn.BatchNorm2d, so
  it sees none of the bundled Lite0's BatchNormAct2d layers and no torchvision Conv2dNormActivation subtlety);
- a BatchNorm with a built-in activation (timm's BatchNormAct2d) is read before the activation, where its bias is
  added (pytorch-grad-cam's hook would see the activation's output).
Scaling each map before summing is linear-friendly: the maps are scaled and summed at their own resolution and
resized once, which equals resizing each first (bilinear resizing commutes with sums).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepprobeError

SCALE_EPS = 1e-7  # pytorch-grad-cam's scale_cam_image guard


def _bias(module: nn.Module) -> torch.Tensor | None:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
        weight = module.weight if module.weight is not None else torch.ones_like(module.running_mean)
        bias = module.bias if module.bias is not None else torch.zeros_like(module.running_mean)
        return (bias - module.running_mean * weight / torch.sqrt(module.running_var + module.eps)).detach()
    if isinstance(module, nn.Conv2d) and module.bias is not None:
        return module.bias.detach()
    return None


def scale_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each (h,w) map of (N,C,h,w) on its own (pytorch-grad-cam's scale_accross_batch_and_channels)."""
    flat = maps.flatten(2)
    flat = flat - flat.min(-1, keepdim=True).values
    return (flat / (SCALE_EPS + flat.max(-1, keepdim=True).values)).view_as(maps)


def fullgrad(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """FullGrad maps (N,H,W) at the input's size."""
    if layer not in (None, ""):
        raise DeepprobeError("fullgrad sums every layer with a bias; --layer does not apply to it")
    if targets is None:
        raise DeepprobeError("fullgrad needs a target class")
    biased = [(m, b) for m in probe.inner.modules() if (b := _bias(m)) is not None]
    grads: dict[int, torch.Tensor] = {}

    def keep(index: int):
        def hook(tensor: torch.Tensor):
            if tensor.requires_grad:
                tensor.register_hook(lambda g: grads.__setitem__(index, g.detach()))
        return hook

    handles = []
    for i, (module, _) in enumerate(biased):
        act = getattr(module, "act", None)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and isinstance(act, nn.Module):
            # read before the built-in activation; its input is cloned so an in-place activation leaves it alone
            handles.append(act.register_forward_pre_hook(lambda _m, args, k=keep(i): (k(args[0]), args[0].clone())[1]))
        else:
            handles.append(module.register_forward_hook(lambda _m, _i, out, k=keep(i): k(out)))
    try:
        with torch.enable_grad():
            inp = x.detach().requires_grad_(True)
            score = probe.net(inp).float().gather(1, targets.to(x.device).view(-1, 1)).sum()
            (input_grad,) = torch.autograd.grad(score, inp)
    finally:
        for h in handles:
            h.remove()
    size = tuple(x.shape[-2:])
    total = scale_maps((input_grad * x).abs().float()).sum(1)
    for i, (_, bias) in enumerate(biased):
        if i not in grads or grads[i].dim() != 4:
            continue  # a layer the score does not depend on (or not a spatial map) adds nothing
        term = scale_maps((bias.view(1, -1, 1, 1) * grads[i]).abs().float()).sum(1, keepdim=True)
        total = total + F.interpolate(term, size=size, mode="bilinear", align_corners=False)[:, 0]
    return total
