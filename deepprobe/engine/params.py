"""Parameterizations: small nn.Modules whose forward() returns the image batch being optimized.

After every optimizer step the engine calls `project_()` so constraints (valid pixel range, an Lp ball
around the original, a basis range) hold at all times; `steepest(grad)` gives the signed-gradient step
direction that fits the constraint's norm.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Parameterization(nn.Module):
    """Base: subclasses produce (N,3,H,W) images in [0,1] from their parameters."""

    def project_(self) -> None:
        """Restore constraints in place after a step (default: nothing)."""

    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        """Direction of steepest descent under L-inf: the sign of the gradient."""
        return grad.sign()


class Pixels(Parameterization):
    """Raw pixels, clamped to [0,1] after every step."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.pixels = nn.Parameter(init.detach().clone().clamp(0, 1))

    def forward(self) -> torch.Tensor:
        return self.pixels

    @torch.no_grad()
    def project_(self) -> None:
        self.pixels.clamp_(0, 1)


class Perturbation(Parameterization):
    """base + delta with ||delta||_p <= eps (p = inf or 2) and base + delta in [0,1] (attacks)."""

    def __init__(self, base: torch.Tensor, eps: float, norm: str = "linf", random_start: bool = True,
                 generator: torch.Generator | Sequence[torch.Generator] | None = None):
        super().__init__()
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be linf or l2, got {norm!r}")
        self.register_buffer("base", base.detach().clone())
        self.eps, self.norm = float(eps), norm
        delta = torch.zeros_like(base)
        if random_start and eps > 0:
            noise = _uniform(base.shape, generator).to(base.device) * 2 - 1
            delta = noise * eps if norm == "linf" else _scale_to_l2(noise, eps * 0.5)
        self.delta = nn.Parameter(delta)
        self.project_()

    def forward(self) -> torch.Tensor:
        return self.base + self.delta

    @torch.no_grad()
    def project_(self) -> None:
        if self.norm == "linf":
            self.delta.clamp_(-self.eps, self.eps)
        else:
            norms = self.delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            factor = (self.eps / norms).clamp(max=1.0).view(-1, 1, 1, 1)
            self.delta.mul_(factor)
        self.delta.copy_((self.base + self.delta).clamp(0, 1) - self.base)

    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return grad.sign()
        return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


def _uniform(shape: torch.Size, generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """U[0,1) noise on the CPU; a sequence of generators draws each image from its own (batch-independent)."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(shape, generator=generator, device="cpu")
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for {shape[0]} images")
    return torch.stack([torch.rand(shape[1:], generator=g, device="cpu") for g in generator])


def _scale_to_l2(noise: torch.Tensor, radius: float) -> torch.Tensor:
    return noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) * radius


# Colour decorrelation from lucent / lucid (ImageNet colour covariance square root).
_COLOR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR_CORRELATION = _COLOR_CORRELATION / _COLOR_CORRELATION.norm(dim=0).max()


class FourierImage(Parameterization):
    """Lucent-style image: scaled Fourier coefficients + decorrelated colour + sigmoid (for visualization).

    Scaling each frequency by 1/f makes gradient steps favour low frequencies, so results show structure
    instead of high-frequency noise.
    """

    def __init__(self, batch: int, height: int, width: int, sd: float = 0.01, decay_power: float = 1.0,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu"):
        super().__init__()
        fy = torch.fft.fftfreq(height)[:, None]
        fx = torch.fft.rfftfreq(width)[None, :]
        freqs = torch.sqrt(fx * fx + fy * fy)
        scale = 1.0 / torch.maximum(freqs, torch.tensor(1.0 / max(height, width))) ** decay_power
        # As lucid: TF's irfft2d divides by H*W, lucid multiplies by sqrt(H*W) first, i.e. an orthonormal
        # inverse transform; then divides by 4 so the sigmoid does not saturate at the start.
        self.register_buffer("scale", (scale / 4.0)[None, None, :, :, None].to(device))
        init = torch.randn((batch, 3, height, width // 2 + 1, 2), generator=generator) * sd
        self.spectrum = nn.Parameter(init.to(device))
        self.size = (height, width)
        self.register_buffer("color", _COLOR_CORRELATION.to(device))

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex((self.spectrum * self.scale).contiguous())
        image = torch.fft.irfftn(spectrum, s=self.size, norm="ortho")
        image = torch.einsum("nchw,dc->ndhw", image, self.color)
        return torch.sigmoid(image)


class Basis(Parameterization):
    """base + sum_k p_k * basis_k: a low-dimensional edit (PCA or smooth components), clamped to [0,1].

    basis: (K,3,H,W). Coefficients p: (N,K), bounded to +-`limit` so edits stay plausible.
    """

    def __init__(self, base: torch.Tensor, basis: torch.Tensor, limit: float | None = None,
                 init: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("base", base.detach().clone())
        self.register_buffer("basis", basis.detach().clone().to(base.device))
        coeffs = torch.zeros(base.shape[0], basis.shape[0], device=base.device) if init is None else init.clone()
        self.coefficients = nn.Parameter(coeffs)
        self.limit = limit

    def forward(self) -> torch.Tensor:
        edit = torch.einsum("nk,kchw->nchw", self.coefficients, self.basis)
        return (self.base + edit).clamp(0, 1)

    @torch.no_grad()
    def project_(self) -> None:
        if self.limit is not None:
            self.coefficients.clamp_(-self.limit, self.limit)
