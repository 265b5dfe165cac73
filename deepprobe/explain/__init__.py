"""Explanations: one `explain()` that dispatches to a method and returns (N,H,W) maps in [0,1] at input size.

Each method is a function `fn(probe, x, targets, layer=None, **method_options) -> Tensor (N,h,w)` giving a raw,
non-negative-or-signed map at any resolution (a CAM at feature-map size, rollout at the patch grid, captum
attributions at pixel size). explain/maps.py owns what every method shares: the default target (predicted class),
resizing to the input in torch on the device, and per-image min-max scaling, so methods never repeat it; this
module sends detectors and segmenters to explain/tasks.py and classifiers to maps.class_maps.
"""
from __future__ import annotations

import sys
import types

import torch

from ..options.ranges import check_ranges
from .maps import EPS, METHODS, class_maps, method_function, resolve_targets, to_input_size  # noqa: F401 (API)


def explain(probe, x: torch.Tensor, method: str = "gradcam", target=None, layer: str | None = None,
            **method_options) -> torch.Tensor:
    """(N,H,W) maps in [0,1] at the input's size; `target` None explains the predicted class.

    Detectors and segmenters (`probe.task`): see `deepprobe.explain.tasks` -- a detector gives one BoxMaps per
    image (its boxes, one map per box; `min_score` picks the boxes), a segmenter (N,H,W) maps of `target`'s
    predicted pixels (default: each image's largest class other than background). CLIP (`image-text`) is
    explained like a classifier whose classes are its prompts (`probe.set_prompts`). Embedders (DINO, CLIP's
    image tower): `attention`/`rollout` as on any ViT, and with `reference=` (images) every other method, and
    `similarity`, maps where each image resembles the reference (see `deepprobe.explain.embedding`). Segment
    Anything takes `prompt=Prompt(...)` (its chosen mask is explained), a depth estimator
    `region=(x0, y0, x1, y1)` (its mean depth there; default the whole image): see `deepprobe.explain.sam_depth`.
    """
    check_ranges("explain", method_options)
    return _shown(_explain(probe, x, method, target, layer, method_options), probe, x, method, target, layer)


def _shown(result, probe, x: torch.Tensor, method: str, target, layer: str | None):
    """The same maps, able to draw themselves in Jupyter (see explain/shown_maps.py for why a tensor subclass)."""
    if isinstance(result, torch.Tensor):
        from .shown_maps import Maps

        return Maps.wrap(result, bundle=probe, images=x, method=method, target=target, layer=layer)
    for i, item in enumerate(result):  # a detector: one BoxMaps per image
        item._attach(image=x[i], method=method, layer=layer, model_title=probe.title)
    return result


def _explain(probe, x: torch.Tensor, method: str, target, layer: str | None, method_options: dict):
    task = getattr(probe, "task", "classification")
    if task == "embedding":
        from .embedding import explain_embedder

        return explain_embedder(probe, x, method, target=target, layer=layer, **method_options)
    if method_options.get("reference") is not None:
        from ..errors import DeepprobeError

        raise DeepprobeError(f"reference= explains the similarity of an embedder's embeddings; {probe.spec} is a "
                             f"{task} model")
    if task in ("promptable-segmentation", "depth"):  # a prompt's mask, a region's depth
        from .sam_depth import explain_prompt, explain_region

        explainer = explain_region if task == "depth" else explain_prompt
        return explainer(probe, x, method, target=target, layer=layer, **method_options)
    if task in ("detection", "segmentation"):  # CLIP ranks its prompts
        from .tasks import explain_task

        return explain_task(probe, x, method, target=target, layer=layer, **method_options)
    return class_maps(probe, x, method, target=target, layer=layer, **method_options)


class _CallableModule(types.ModuleType):
    """`dp.explain(...)` must stay a function even after `import deepprobe.explain.transformer`: importing a
    submodule makes Python set the package `deepprobe.explain` as an attribute of `deepprobe`, shadowing the
    function of the same name. Making the package itself callable keeps both `dp.explain(...)` and
    `dp.explain.transformer` working."""

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
