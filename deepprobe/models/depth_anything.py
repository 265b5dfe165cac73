"""Depth Anything (Hugging Face DepthAnythingForDepthEstimation in `hf:DIR`) as a depth estimator.

`DepthAnythingNet` takes normalized (N,3,H,W) images of any size and resizes them inside as the saved
DPTImageProcessor does (to `size`, aspect kept by the smaller change, each side a multiple of the patch size 14;
bicubic, differentiable), runs the model and brings the predicted depth back to the input's size (bicubic, as
transformers' post_process_depth_estimation does). So attacks and explanations work on the photo's own pixels.

Depth Anything's relative models predict affine-invariant inverse depth (disparity): larger means nearer.
Its metric models (`depth_estimation_type: metric`) predict depth in metres: larger means farther.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from .tasks import DepthNet

DEFAULT_SIZE = 518  # Depth Anything's processor: 518 x 518, aspect kept, multiples of 14
MULTIPLE = 14


def dpt_input_size(height: int, width: int, size: tuple[int, int], keep_aspect: bool, multiple: int) -> tuple[int, int]:
    """The (H, W) DPTImageProcessor resizes an image to (transformers' get_resize_output_image_size)."""
    scale_h, scale_w = size[0] / height, size[1] / width
    if keep_aspect:  # scale as little as possible
        if abs(1 - scale_w) < abs(1 - scale_h):
            scale_h = scale_w
        else:
            scale_w = scale_h

    def constrain(value: float) -> int:
        out = round(value / multiple) * multiple
        return out if out >= multiple else math.ceil(value / multiple) * multiple

    return max(multiple, constrain(scale_h * height)), max(multiple, constrain(scale_w * width))


class DepthAnythingNet(DepthNet):
    """A DepthAnythingForDepthEstimation (`.net`) behind the depth convention of models/tasks.py."""

    cam_layer = "neck.fusion_stage.layers.3"  # the last fusion of DPT's neck: every scale, before the depth head

    def __init__(self, model: torch.nn.Module, size: tuple[int, int] = (DEFAULT_SIZE, DEFAULT_SIZE),
                 keep_aspect: bool = True, multiple: int = MULTIPLE):
        metric = getattr(model.config, "depth_estimation_type", "relative") == "metric"
        super().__init__(model, larger_is_nearer=not metric)
        self.size, self.keep_aspect, self.multiple = (int(size[0]), int(size[1])), bool(keep_aspect), int(multiple)

    def resized(self, x: torch.Tensor) -> torch.Tensor:
        size = dpt_input_size(int(x.shape[-2]), int(x.shape[-1]), self.size, self.keep_aspect, self.multiple)
        if size == tuple(x.shape[-2:]):
            return x
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=size[0] < x.shape[-2])

    def depth(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=self.resized(x)).predicted_depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.depth(x)
        if tuple(out.shape[-2:]) != tuple(x.shape[-2:]):
            out = F.interpolate(out[:, None], size=x.shape[-2:], mode="bicubic", align_corners=False)[:, 0]
        return out


def load_depth_anything(folder: Path):
    """(DepthAnythingNet, labels None, Preprocess) from a save_pretrained folder, offline."""
    from transformers import DepthAnythingForDepthEstimation

    from .hf_processor import _RESAMPLE, load_saved, processor_config

    model = load_saved(DepthAnythingForDepthEstimation, folder, f"cannot load Depth Anything from {folder}")
    cfg = processor_config(folder)
    size = cfg.get("size") or {}
    size = (int(size.get("height", DEFAULT_SIZE)), int(size.get("width", DEFAULT_SIZE))) \
        if isinstance(size, dict) else (int(size), int(size))
    multiple = int(cfg.get("ensure_multiple_of", MULTIPLE) or 1)
    mean, std = tuple(cfg.get("image_mean", IMAGENET_MEAN)), tuple(cfg.get("image_std", IMAGENET_STD))
    net = DepthAnythingNet(model, size, bool(cfg.get("keep_aspect_ratio", True)), multiple)
    # photos keep their size (the adapter resizes inside): regions and depth maps are in the photo's own pixels
    pre = Preprocess(crop=None, resize=None, mean=mean, std=std,
                     interpolation=_RESAMPLE.get(cfg.get("resample"), "bicubic"))
    return net, None, pre
