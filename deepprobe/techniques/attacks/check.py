"""When an adversarial example counts: AutoAttack's checks, on the 8-bit image, by a fresh forward pass.

Attacks search in float; a candidate counts only once its 8-bit version (rounded into the eps ball, as a
saved PNG would hold it) is finite, in [0,1], inside the ball and misclassified by a forward pass of its
own. The clean images are on the 8-bit grid already (the attacks round them first), so the ball and the
grid agree: for L-inf the rounded image keeps the budget exactly, for L2 the change is shrunk until its
rounded version fits (techniques/fool.py `on_grid`).
"""
from __future__ import annotations

import torch

from ...models import ModelBundle
from ..fool import on_grid

# Slack on the budget for float32 round-off in |q - x| (both on the 8-bit grid).
_BALL_TOLERANCE = 1e-6


def norms(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L-inf, L2) of each image's change, [0,1] units."""
    flat = delta.flatten(1).float()
    return flat.abs().amax(1), flat.norm(dim=1)


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """(N,) size of each image's change in the threat model's norm."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def inside(images: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """(N,) AutoAttack's sanity checks: no NaN/inf, pixels in [0,1], change within the eps ball."""
    flat = images.flatten(1)
    finite = torch.isfinite(flat).all(1)
    in_range = (flat >= 0).all(1) & (flat <= 1).all(1)
    size = lp_norm(torch.nan_to_num(images - x), norm)
    return finite & in_range & (size <= eps * (1 + _BALL_TOLERANCE) + _BALL_TOLERANCE)


class Checker:
    """Keeps, per image, the first adversarial example that passed the checks, and its class.

    `x` (N,3,H,W) on the 8-bit grid, `labels` (N,) the classes an attack must move away from.
    """

    def __init__(self, bundle: ModelBundle, x: torch.Tensor, labels: torch.Tensor, eps: float, norm: str):
        self.bundle, self.x, self.labels, self.eps, self.norm = bundle, x, labels, float(eps), norm
        self.success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        self.images = x.clone()
        self.predicted = labels.clone()
        self.forwards = 0  # images passed through the model for checks (bookkeeping for tests/benchmarks)

    @torch.no_grad()
    def count_clean(self) -> None:
        """Images misclassified as they are count as broken (their example is the clean image itself)."""
        pred = self.bundle.net(self.x).argmax(1)
        self.forwards += self.x.shape[0]
        wrong = pred != self.labels
        self.success |= wrong
        self.predicted = torch.where(wrong, pred, self.predicted)

    @torch.no_grad()
    def __call__(self, index: torch.Tensor, *candidates: torch.Tensor) -> torch.Tensor:
        """Check candidates for images index[k] (each (K,3,H,W); later ones are tried only where earlier ones
        did not count); (K,) bool, True where the image now counts as broken."""
        ok = torch.zeros(index.shape[0], dtype=torch.bool, device=self.x.device)
        for images in candidates:
            rows = (~ok).nonzero().flatten()
            if rows.numel() == 0:
                break
            ok[rows[self._check(index[rows], images[rows])]] = True
        return ok

    def _check(self, index: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        x = self.x[index]
        candidates = candidates.detach().float()
        finite = torch.isfinite(candidates.flatten(1)).all(1)  # a NaN anywhere disqualifies, before rounding
        q = on_grid(torch.nan_to_num(candidates), x, self.eps, self.norm)
        # An example that rounds back to the clean image cannot count (the clean image is classified right).
        valid = finite & inside(q, x, self.eps, self.norm) & (q != x).flatten(1).any(1)
        ok = torch.zeros_like(valid)
        rows = valid.nonzero().flatten()
        if rows.numel():
            pred = self.bundle.net(q[rows]).argmax(1)
            self.forwards += rows.numel()
            fooled = pred != self.labels[index[rows]]
            ok[rows[fooled]] = True
            hit = index[rows[fooled]]
            self.images[hit] = q[rows[fooled]]
            self.predicted[hit] = pred[fooled]
            self.success[hit] = True
        return ok
