"""How an image becomes model input: resize the short side, centre-crop, and normalize inside the net."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """Geometry a model expects: resize short side to `resize`, then crop `crop` (H, W).

    Without a crop (detectors, segmenters: any size and aspect) `resize` only ever shrinks: an image whose short
    side is above it is scaled down to it, a smaller one is kept as it is (so a saved result re-enters unchanged).
    """

    crop: tuple[int, int] | None = (224, 224)
    resize: int | None = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"

    def geometry(self, image: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) in [0,1] -> resized and centre-cropped; an image already at crop size is kept as is."""
        if self.crop is None:
            if self.resize and min(image.shape[-2:]) > self.resize:
                return resize(image, self.resize, self.interpolation).clamp(0, 1)
            return image
        if tuple(image.shape[-2:]) == tuple(self.crop):
            return image
        image = resize(image, self.resize or list(self.crop), self.interpolation)
        return center_crop(image, self.crop).clamp(0, 1)


# torchvision.transforms.functional's resize and center_crop on float tensors, in torch alone: importing torchvision
# imports torch._dynamo, seconds of a one-photo `deepprobe classify` (tests/test_models.py checks they are equal).
_TORCH_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic")


def resize(image: torch.Tensor, size: int | list[int], interpolation: str = "bicubic") -> torch.Tensor:
    """Short side to `size` (the long side truncated, as torchvision does), or to (H, W); antialiased."""
    if interpolation not in _TORCH_MODES or image.dtype not in (torch.float32, torch.float64) or image.dim() != 4:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        return F.resize(image, size, interpolation=InterpolationMode(interpolation), antialias=True)
    height, width = image.shape[-2:]
    if isinstance(size, int):
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(size * long / short)
        out = [new_long, size] if width <= height else [size, new_long]
    else:
        out = list(size)
    if out == [height, width]:
        return image
    smooth = interpolation in ("bilinear", "bicubic")
    return torch.nn.functional.interpolate(image, size=out, mode=interpolation, align_corners=False if smooth else None,
                                           antialias=smooth)


def center_crop(image: torch.Tensor, size: tuple[int, int] | list[int]) -> torch.Tensor:
    """The centre (H, W) window; an image smaller than it is first padded with zeros around it."""
    crop_h, crop_w = size
    height, width = image.shape[-2:]
    if crop_w > width or crop_h > height:
        pad_w, pad_h = max(crop_w - width, 0), max(crop_h - height, 0)
        image = torch.nn.functional.pad(image, [pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2])
        height, width = image.shape[-2:]
    top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    return image[..., top:top + crop_h, left:left + crop_w]


class Normalized(nn.Module):
    """Wraps a network so it takes [0,1] RGB images: attacks and optimizers then work in pixel space."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class LogitsOf(nn.Module):
    """Unwraps models that return an output object or tuple (Hugging Face, some scripted models)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if hasattr(out, "logits"):
            return out.logits
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            return out[0]
        return out  # a tensor, or a detector's list of dicts (the task adapters take it from here)
