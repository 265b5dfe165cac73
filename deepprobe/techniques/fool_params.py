"""Parameterizations the minimum-change attacks need: the image stays in [0,1] without a projection step.

A projection (clamp) after each step leaves L-BFGS with curvature pairs that do not match the function it
sees, which makes it stall or diverge; both forms below keep the box inside the function instead.
"""
from __future__ import annotations

import torch
from torch import nn

from ..engine import Parameterization

# atanh(+-1) is infinite: start from slightly inside the box (a shift far below one 8-bit level).
_INSIDE = 1 - 1e-6


class TanhImage(Parameterization):
    """Carlini-Wagner: x' = (tanh(w) + 1) / 2, initialised so that x' equals `init` (up to 1e-6)."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(torch.atanh((init.detach() * 2 - 1).clamp(-_INSIDE, _INSIDE)))

    def forward(self) -> torch.Tensor:
        return (torch.tanh(self.w) + 1) / 2


class BoxPixels(Parameterization):
    """Szegedy et al.'s box constraint: raw pixels seen through clamp(0, 1) (zero gradient outside the box)."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.pixels = nn.Parameter(init.detach().clone())

    def forward(self) -> torch.Tensor:
        return self.pixels.clamp(0, 1)
