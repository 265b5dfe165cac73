"""The classifier path of `explain()`: the method registry, default targets, resizing and per-image scaling.

Kept apart from the package's `explain()` so the task explainers (explain/tasks.py), which run a classifier-shaped
view of a detector or segmenter through it, do not import the dispatcher that imports them.
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..display import Shows
from ..errors import DeepprobeError
from ..models.outputs import Detections
from ..options.explain import CLASS_FREE  # explain() skips the predicted-class pass for these

# method name -> "module:function" (relative to deepprobe.explain); modules are imported on first use.
METHODS: dict[str, str] = {
    "gradcam": "cam:gradcam",
    "gradcam++": "cam:gradcam_pp",
    "hirescam": "cam:hirescam",
    "xgradcam": "cam:xgradcam",
    "layercam": "cam:layercam",
    "eigencam": "cam:eigencam",
    "scorecam": "cam_passes:scorecam",
    "ablationcam": "cam_passes:ablationcam",
    "fullgrad": "fullgrad:fullgrad",
    "saliency": "attributions:saliency",
    "ig": "attributions:integrated_gradients",
    "smoothgrad": "attributions:smoothgrad",
    "occlusion": "attributions:occlusion",
    "guided-backprop": "attributions:guided_backprop",
    "lrp": "lrp:lrp",
    "attnlrp": "attnlrp:attnlrp",
    "rollout": "transformer:rollout",
    "chefer": "transformer:chefer",
    "attention": "transformer:attention",
    "legrad": "legrad:legrad",
    "similarity": "embedding:similarity",  # embedders with a reference image (explain/embedding.py)
}
EPS = 1e-8


def method_function(method: str):
    """The raw-map function of `method`, with a clear error listing the known ones."""
    if method not in METHODS:
        raise DeepprobeError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}")
    module, _, name = METHODS[method].partition(":")
    return getattr(importlib.import_module(f"deepprobe.explain.{module}"), name)


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


def class_maps(probe, x: torch.Tensor, method: str = "gradcam", target=None, layer: str | None = None,
               **method_options) -> torch.Tensor:
    """(N,H,W) maps in [0,1] of a classifier-shaped probe (logits out); `target` None explains the predicted class."""
    fn = method_function(method)
    x = x.to(probe.device)
    targets = None if method in CLASS_FREE and target is None else resolve_targets(probe, x, target)
    raw = fn(probe, x, targets, layer=layer, **method_options)
    return to_input_size(raw, x.shape[-2:])


@dataclass
class BoxMaps(Shows):
    """One image's explained boxes (a detector's) and one (H,W) map in [0,1] per box, in the same order. In
    Jupyter: each box's map over the photo with the box drawn, as `deepprobe explain` writes them."""

    detections: Detections
    maps: torch.Tensor  # (K,H,W)

    def figure(self):
        from ..figures.explain import box_maps_grid, method_label

        photo, method, title = self._needs("image", "method", "model_title")
        return box_maps_grid(photo.detach().cpu(), self, method_label(method, self._context_get("layer")),
                             f"{method} · {title}")
