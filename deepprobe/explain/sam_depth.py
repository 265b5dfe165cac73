"""Explanations for Segment Anything (which pixels drive a prompt's mask) and depth estimators (which pixels
drive a region's predicted depth).

Each explains one number per image, like explain/tasks.py does for detectors and segmenters, through its
`score_view` (the model seen as a one-output classifier of that number), so Grad-CAM, HiResCAM and the captum
methods run unchanged:
- SAM: the chosen mask's logits summed over the mask (pytorch-grad-cam's SemanticSegmentationTarget applied to
  the candidate SAM picks for the prompt on the clean image);
- depth: the mean predicted depth over a region (the whole image by default). Its sign is the model's: for
  Depth Anything (inverse depth) the map shows what makes the region look nearer, for a metric model farther.
CAMs read the adapter's own layer (SAM: the image embedding `vision_encoder.neck`; Depth Anything: the last
fusion stage `neck.fusion_stage.layers.3`), else the last spatial map.
"""
from __future__ import annotations

import torch

from ..errors import DeepprobeError
from ..models.depth import Region, region_mask
from ..models.sam import Prompt, sam_of
from ..models.sam_masks import segment_prompts
from ..models.tasks import DEPTH, PROMPTABLE_SEGMENTATION, describe_task, require_task
from ..options.explain import CAM_METHODS
from .maps import class_maps
from .tasks import TASK_METHODS, mask_score, score_view


def adapter_layer(bundle, x: torch.Tensor) -> str:
    """The layer a CAM explains: the adapter's `cam_layer`, else the last spatial map."""
    from ..models.layers import last_spatial_layer

    for module in bundle.net.modules():
        name = getattr(module, "cam_layer", None)
        if isinstance(name, str) and type(module).__module__.startswith("deepprobe"):
            return name
    return last_spatial_layer(bundle.net, x[:1], bundle.inner)


def check_method(bundle, method: str, target=None) -> None:
    """One line for a method (or a class target) that has no meaning on SAM or a depth estimator."""
    if target is not None:
        raise DeepprobeError(f"{bundle.spec} is {describe_task(bundle.task)}: it has no classes, so a target "
                             "does not apply")
    if method not in TASK_METHODS:
        raise DeepprobeError(f"{method} does not apply to {bundle.spec}: it is {describe_task(bundle.task)}; "
                             f"methods for it: {', '.join(TASK_METHODS)}")


def explain_prompt(bundle, x: torch.Tensor, method: str = "hirescam", prompt: Prompt | None = None,
                   layer: str | None = None, target=None, **method_options) -> torch.Tensor:
    """(N,H,W) maps of what drives SAM's chosen mask for `prompt` (in the images' pixels) on each image."""
    require_task(bundle, "explain_prompt", PROMPTABLE_SEGMENTATION)
    if prompt is None:
        raise DeepprobeError("explaining Segment Anything needs a prompt: --point X,Y or --box X0,Y0,X1,Y1 "
                             "(prompt=Prompt.point(x, y) in Python)")
    check_method(bundle, method, target)
    x = x.to(bundle.device)
    layer = layer or (adapter_layer(bundle, x) if method in CAM_METHODS else None)
    maps = []
    with sam_of(bundle.net).prompted(prompt):
        for i, found in enumerate(segment_prompts(bundle, x, [prompt])):
            chosen = found[0]
            if not chosen.mask.any():  # an empty mask scores a constant 0: nothing drives it
                maps.append(torch.zeros(x.shape[-2:]))
                continue
            view = score_view(bundle, lambda logits, k=chosen.chosen, m=chosen.mask.float(): mask_score(logits, k, m))
            maps.append(class_maps(view, x[i:i + 1], method, target=0, layer=layer, **method_options)[0].cpu())
    return torch.stack(maps)


def explain_region(bundle, x: torch.Tensor, method: str = "hirescam", region: Region | None = None,
                   layer: str | None = None, target=None, **method_options) -> torch.Tensor:
    """(N,H,W) maps of what drives the mean predicted depth of `region` (x0, y0, x1, y1; None: the whole
    image)."""
    require_task(bundle, "explain_region", DEPTH)
    check_method(bundle, method, target)
    x = x.to(bundle.device)
    mask = region_mask(region, int(x.shape[-2]), int(x.shape[-1]), x.device).float()
    layer = layer or (adapter_layer(bundle, x) if method in CAM_METHODS else None)
    view = score_view(bundle, lambda depth: (depth * mask).sum((1, 2)) / mask.sum())
    return class_maps(view, x, method, target=0, layer=layer, **method_options)
