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
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        mode = InterpolationMode(self.interpolation)
        if self.crop is None:
            if self.resize and min(image.shape[-2:]) > self.resize:
                return F.resize(image, self.resize, interpolation=mode, antialias=True).clamp(0, 1)
            return image
        if tuple(image.shape[-2:]) == tuple(self.crop):
            return image
        if self.resize:
            image = F.resize(image, self.resize, interpolation=mode, antialias=True)
        else:
            image = F.resize(image, list(self.crop), interpolation=mode, antialias=True)
        return F.center_crop(image, list(self.crop)).clamp(0, 1)


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
