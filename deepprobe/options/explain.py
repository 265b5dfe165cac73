"""Defaults of `deepprobe explain` and of the method options of `deepprobe.explain` (one copy, torch-free).

The captum methods read their defaults from here (`method_defaults`), so the API, the CLI and recipes agree.
Sizes were chosen on the bundled EfficientNet-Lite0 at 224 px on a 2-core CPU: 32 integrated-gradient steps
and 16 smoothgrad samples keep one photo under a few seconds; an occlusion window of 1/7 of the short side
(32 px at 224) with half-window strides matches the stride-32 feature map a Grad-CAM reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_METHODS = ("gradcam",)
# detectors: a box's score depends on one region, which Grad-CAM's averaged channel weights lose (see
# deepprobe.explain.cam.hirescam); the element-wise map stays on the box. The same holds for a prompt's mask
# (Segment Anything) and a region's depth.
DEFAULT_METHODS_BY_TASK = {"detection": ("hirescam",), "promptable-segmentation": ("hirescam",),
                           "depth": ("hirescam",)}
CAM_METHODS = ("gradcam", "gradcam++", "hirescam")  # methods that read a layer's activations and gradients
# methods whose maps do not depend on the class: computed once per batch, without a predicted-class pass
CLASS_FREE = ("rollout", "attention")


@dataclass
class Options:
    method: list[str] = field(default_factory=list)  # explanation methods; empty: the task's default_methods()
    target: list[str] = field(default_factory=list)  # class names/indices; empty = each image's predicted class
    layer: str | None = None  # CAM layer (default: last spatial map); `attention`: block index
    batch_size: int = 8  # images per batch
    steps: int = 32  # ig: interpolation steps from the black baseline
    internal_batch: int = 32  # ig/smoothgrad/occlusion: most forward passes evaluated at once (bounds memory)
    samples: int = 16  # smoothgrad: noisy copies averaged
    noise: float = 0.15  # smoothgrad: noise standard deviation, as a fraction of the [0,1] pixel range
    window: int = 0  # occlusion: square window in pixels (0 = 1/7 of the image's short side)
    stride: int = 0  # occlusion: window step in pixels (0 = half the window)
    head_fusion: str = "mean"  # rollout: how heads are fused (mean|max|min)
    discard_ratio: float = 0.0  # rollout: lowest attentions dropped per row (the CLS column is kept)
    head: int | None = None  # attention: one head instead of the mean over heads
    alpha: float = 0.5  # opacity of the heat map over the photo
    min_score: float = 0.5  # detectors: boxes at or above this score get a map each


RANGES = {
    "batch_size": "[1, inf)", "steps": "[1, inf)", "internal_batch": "[1, inf)", "samples": "[1, inf)",
    "noise": "[0, 1]", "window": "[0, inf)", "stride": "[0, inf)", "discard_ratio": "[0, 1)", "head": "[0, inf)",
    "alpha": "[0, 1]", "min_score": "[0, 1]",
}


# Method option -> the methods that read it (what `explain()` is given for each method).
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "ig": ("steps", "internal_batch"),
    "smoothgrad": ("samples", "noise", "internal_batch"),
    "occlusion": ("window", "stride", "internal_batch"),
    "rollout": ("head_fusion", "discard_ratio"),
    "attention": ("head",),
}
# methods that read --layer (a module name; a block index for attention; similarity: Grad-CAM's layer)
LAYER_METHODS = CAM_METHODS + ("attention", "similarity")


def method_kwargs(opts: Options, method: str, cam_layer: str | None) -> dict:
    """The keyword options `explain()` takes for `method`, its layer included (shared by the CLI's explainers)."""
    kwargs = {name: getattr(opts, name) for name in METHOD_OPTIONS.get(method, ())}
    if method in LAYER_METHODS and opts.layer:
        kwargs["layer"] = opts.layer
    elif method in CAM_METHODS:
        kwargs["layer"] = cam_layer
    return kwargs


def default_methods(task: str) -> list[str]:
    """The methods `explain` runs when none is given: Grad-CAM, and HiResCAM on detectors."""
    return list(DEFAULT_METHODS_BY_TASK.get(task, DEFAULT_METHODS))


def method_defaults(method: str) -> dict:
    """The default keyword options of one method (empty for methods without options)."""
    defaults = Options()
    return {name: getattr(defaults, name) for name in METHOD_OPTIONS.get(method, ())}
