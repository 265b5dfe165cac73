"""Explanations: one `explain()` that dispatches to a method and returns (N,H,W) maps in [0,1] at input size.

Each method is a function `fn(probe, x, targets, layer=None, **method_options) -> Tensor (N,h,w)` giving a raw,
non-negative-or-signed map at any resolution (a CAM at feature-map size, rollout at the patch grid, captum
attributions at pixel size). This module owns what every method shares: the default target (predicted class),
resizing to the input in torch on the device, and per-image min-max scaling, so methods never repeat it.
"""
from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import DeepprobeError
from ..options.explain import CLASS_FREE  # explain() skips the predicted-class pass for these

# method name -> "module:function" (relative to deepprobe.explain); modules are imported on first use.
METHODS: dict[str, str] = {
    "gradcam": "cam:gradcam",
    "gradcam++": "cam:gradcam_pp",
    "hirescam": "cam:hirescam",
    "saliency": "attributions:saliency",
    "ig": "attributions:integrated_gradients",
    "smoothgrad": "attributions:smoothgrad",
    "occlusion": "attributions:occlusion",
    "guided-backprop": "attributions:guided_backprop",
    "rollout": "transformer:rollout",
    "chefer": "transformer:chefer",
    "attention": "transformer:attention",
}
EPS = 1e-8


def method_function(method: str):
    """The raw-map function of `method`, with a clear error listing the known ones."""
    if method not in METHODS:
        raise DeepprobeError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}")
    module, _, name = METHODS[method].partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def resolve_targets(probe, x: torch.Tensor, target) -> torch.Tensor:
    """Per-image class indices: None -> predicted class; a name, an index, or one per image."""
    if target is None:
        with torch.no_grad():
            return probe.net(x).argmax(1)
    if isinstance(target, torch.Tensor):
        t = target.to(x.device).long().reshape(-1)
    elif isinstance(target, (str, int)):
        t = torch.tensor([probe.class_index(target)], device=x.device)
    else:
        t = torch.tensor([probe.class_index(v) for v in target], device=x.device)
    if t.numel() == 1:
        t = t.expand(x.shape[0])
    if t.numel() != x.shape[0]:
        raise DeepprobeError(f"got {t.numel()} targets for {x.shape[0]} images")
    return t


def to_input_size(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(N,h,w) raw maps -> (N,H,W) in [0,1]: bilinear resize in torch, per-image min-max with an epsilon."""
    maps = maps.detach().float()
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo + EPS)).view_as(maps)


def explain(probe, x: torch.Tensor, method: str = "gradcam", target=None, layer: str | None = None,
            **method_options) -> torch.Tensor:
    """(N,H,W) maps in [0,1] at the input's size; `target` None explains the predicted class.

    Detectors and segmenters (`probe.task`): see `deepprobe.explain.tasks` -- a detector gives one BoxMaps per
    image (its boxes, one map per box; `min_score` picks the boxes), a segmenter (N,H,W) maps of `target`'s
    predicted pixels (default: each image's largest class other than background). CLIP (`image-text`) is
    explained like a classifier whose classes are its prompts (`probe.set_prompts`).
    """
    if getattr(probe, "task", "classification") in ("detection", "segmentation"):  # CLIP ranks its prompts
        from .tasks import explain_task

        return explain_task(probe, x, method, target=target, layer=layer, **method_options)
    fn = method_function(method)
    x = x.to(probe.device)
    targets = None if method in CLASS_FREE and target is None else resolve_targets(probe, x, target)
    raw = fn(probe, x, targets, layer=layer, **method_options)
    return to_input_size(raw, x.shape[-2:])


class _CallableModule(types.ModuleType):
    """`dp.explain(...)` must stay a function even after `import deepprobe.explain.transformer`: importing a
    submodule makes Python set the package `deepprobe.explain` as an attribute of `deepprobe`, shadowing the
    function of the same name. Making the package itself callable keeps both `dp.explain(...)` and
    `dp.explain.transformer` working."""

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
