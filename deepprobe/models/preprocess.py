"""How an image becomes model input: resize the short side, centre-crop, and normalize inside the net."""
from __future__ import annotations

import dataclasses
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
    With a non-square crop the image is scaled to cover the crop, in the ratio resize : short side of the crop.
    `channels` 1: the network reads grey (luma) images; inputs are made grey, kept as 3 equal channels.
    """

    crop: tuple[int, int] | None = (224, 224)
    resize: int | None = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"
    channels: int = 3

    def geometry(self, image: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) in [0,1] -> resized and centre-cropped; an image already at crop size is kept as is."""
        image = self._sized(image)
        return to_grey(image).expand(-1, 3, -1, -1).contiguous() if self.channels == 1 else image

    def _sized(self, image: torch.Tensor) -> torch.Tensor:
        if self.crop is None:
            if self.resize and min(image.shape[-2:]) > self.resize:
                return resize(image, self.resize, self.interpolation).clamp(0, 1)
            return image
        if tuple(image.shape[-2:]) == tuple(self.crop):
            return image
        if self.resize and self.crop[0] == self.crop[1]:
            image = resize(image, self.resize, self.interpolation)
        elif self.resize:
            scale = max(self.crop[0] / image.shape[-2], self.crop[1] / image.shape[-1]) * self.resize / min(self.crop)
            size = [max(self.crop[0], round(image.shape[-2] * scale)), max(self.crop[1], round(image.shape[-1] * scale))]
            image = resize(image, size, self.interpolation)
        else:
            image = resize(image, list(self.crop), self.interpolation)
        return center_crop(image, self.crop).clamp(0, 1)

    def at_size(self, size: tuple[int, int]) -> Preprocess:
        """The same preprocessing for another input size, keeping the ratio of resize to crop (256:224 when the
        model had no crop)."""
        ratio = self.resize / min(self.crop) if self.resize and self.crop else 256 / 224
        resize = None if self.crop and not self.resize else int(round(min(size) * ratio))
        return dataclasses.replace(self, crop=(int(size[0]), int(size[1])), resize=resize)


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


# ITU-R 601-2 luma, as PIL's convert("L")
LUMA = (0.299, 0.587, 0.114)


def to_grey(image: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) -> (N,1,H,W) luma; a 1-channel batch is returned as it is."""
    if image.shape[1] == 1:
        return image
    weights = torch.tensor(LUMA, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image * weights).sum(1, keepdim=True)


class Grey(nn.Module):
    """Feeds a network whose first layer takes one channel (MNIST-style) the luma of the RGB images every
    technique works on."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(to_grey(x))


def takes_grey(net: nn.Module, size: tuple[int, int] | None) -> bool:
    """True when the network's first layer reads one channel: a Conv2d with in_channels 1, or a first Linear layer
    over H*W inputs (an MLP on flattened grey images). Modules are read in the order they were declared."""
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None:
        return conv.in_channels == 1
    linear = next((m for m in net.modules() if isinstance(m, nn.Linear)), None)
    return linear is not None and size is not None and linear.in_features == size[0] * size[1]


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
