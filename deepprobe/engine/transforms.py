"""Robustness transforms: plain differentiable callables (N,3,H,W) -> (N,3,H',W'), composed in a list.

Random draws come from an explicit torch.Generator so seeded runs repeat exactly.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor], torch.Tensor]


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator))


def jitter(pixels: int, generator: torch.Generator | None = None) -> Transform:
    """Shift by up to +-pixels with wrap-around (a random roll)."""
    def apply(x: torch.Tensor) -> torch.Tensor:
        dy, dx = _randint(-pixels, pixels, generator), _randint(-pixels, pixels, generator)
        return torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    return apply


def pad(pixels: int, mode: str = "reflect", value: float = 0.5) -> Transform:
    """Pad on every side so later jitter/rotation do not always crop the centre."""
    def apply(x: torch.Tensor) -> torch.Tensor:
        if mode == "constant":
            return F.pad(x, (pixels,) * 4, mode="constant", value=value)
        return F.pad(x, (pixels,) * 4, mode=mode)
    return apply


def random_scale(scales: Sequence[float], generator: torch.Generator | None = None) -> Transform:
    """Resize by a factor drawn from `scales` (bilinear)."""
    def apply(x: torch.Tensor) -> torch.Tensor:
        factor = scales[_randint(0, len(scales) - 1, generator)]
        if factor == 1:
            return x
        size = [max(1, round(s * factor)) for s in x.shape[-2:]]
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return apply


def random_rotate(degrees: float, generator: torch.Generator | None = None) -> Transform:
    """Rotate by an angle in [-degrees, degrees] about the centre (border pixels replicated)."""
    def apply(x: torch.Tensor) -> torch.Tensor:
        angle = math.radians(_uniform(-degrees, degrees, generator))
        cos, sin = math.cos(angle), math.sin(angle)
        theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return apply


def compose(transforms: Sequence[Transform]) -> Transform:
    def apply(x: torch.Tensor) -> torch.Tensor:
        for t in transforms:
            x = t(x)
        return x
    return apply


def standard_robustness(generator: torch.Generator | None = None, strength: float = 1.0,
                        pixels: float = 1.0) -> list[Transform]:
    """Lucent's default stack: pad, jitter, scale, rotate, jitter (for feature visualization). `pixels` scales the
    pad and jitter distances alone (lucent's suit a 224-px network: 32/224 for a 32-px one)."""
    j = max(1, round(8 * strength * pixels))
    return [pad(max(2, round(12 * strength * pixels)), mode="constant"), jitter(j, generator),
            random_scale([1 + (i - 5) / 50 * strength for i in range(11)], generator),
            random_rotate(10 * strength, generator), jitter(max(1, j // 2), generator)]


# ----- fixed image filters shared by techniques and explainers (not random, not for robustness) -----------
_LUMA = (0.299, 0.587, 0.114)  # Rec. 601 weights of R, G, B


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (N,C,H,W) with sigma in pixels (kernel +-3 sigma); sigma <= 0 returns x as it is."""
    if sigma <= 0:
        return x
    from torchvision.transforms.functional import gaussian_blur as tv_gaussian_blur

    k = 2 * max(1, round(3 * sigma)) + 1
    return tv_gaussian_blur(x, [k, k], [float(sigma), float(sigma)])


def luma(x: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) RGB -> (N,1,H,W) grey (Rec. 601 luma)."""
    weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)
