"""When an adversarial example counts: AutoAttack's checks, on the 8-bit image, by a fresh forward pass.

Attacks search in float; a candidate counts only once its 8-bit version (rounded into the eps ball, as a
saved PNG would hold it) is finite, in [0,1], inside the ball and misclassified by a forward pass of its
own. The clean images are on the 8-bit grid already (the attacks round them first), so the ball and the
grid agree: for L-inf the rounded image keeps the budget exactly, for L2 the change is shrunk until its
rounded version fits (techniques/fool.py `on_grid`).

Rounding to the nearest level erases every pixel change below half a level: a minimal-norm point just past
the boundary (FAB) or a small L2 change spread over all pixels would come back as the clean image. So the
checker first tries the change scaled up by the largest factor whose 8-bit version still fits the budget
(the same direction, using the whole ball; for iterates already on the ball's surface this is plain
rounding), and plain rounding only where that differs and keeps at least half of the change.
"""
from __future__ import annotations

import contextlib

import torch

from ...forwards import ForwardCount
from ...models import ModelBundle
from ..fool import on_grid
from .common import logits

from ...io import quantize

# Slack on the budget for float32 round-off in |q - x| (both on the 8-bit grid).
_BALL_TOLERANCE = 1e-6
KEPT_ENOUGH = 0.5  # plain rounding is tried too when it keeps at least this fraction of the change's size
FULL = 0.98  # a rounded change at least this close to eps already uses the ball (no scaling up)
_SCALE_SEARCH = 16  # bisection steps (on the log scale) for the L2 scale factor


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


def to_grid(candidates: torch.Tensor, x: torch.Tensor, eps: float, norm: str):
    """8-bit versions of each candidate inside the ball: (filled, worth, nearest). filled: the change scaled
    up by the largest factor (>= 1) whose rounded version fits the budget; nearest: plain rounding, worth a
    second forward pass (`worth`) only where it differs from filled and keeps KEPT_ENOUGH of the change."""
    delta = candidates.clamp(0, 1) - x
    nearest = on_grid(candidates, x, eps, norm)
    filled = nearest.clone()
    slack = lp_norm(nearest - x, norm) < FULL * eps  # room left in the ball: scale the change up
    if bool(slack.any()):
        rows = slack.nonzero().flatten()
        filled[rows] = _fill_budget(x[rows], delta[rows], eps, norm)
    worth = (nearest != filled).flatten(1).any(1) & (lp_norm(nearest - x, norm) >= KEPT_ENOUGH * lp_norm(delta, norm))
    return filled, worth, nearest


def _fill_budget(x: torch.Tensor, delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """x + s * delta on the 8-bit grid with the largest s >= 1 whose rounded change fits the ball."""
    size = lp_norm(delta, norm).clamp_min(1e-12)
    if norm == "linf":
        return on_grid(x + delta * (eps / size).view(-1, 1, 1, 1), x, eps, norm)
    peak = delta.flatten(1).abs().amax(1).clamp_min(1e-12)
    lo = torch.ones_like(size)
    hi = torch.maximum(lo, 1.01 * eps / peak)  # beyond this the largest pixel alone overshoots
    for _ in range(_SCALE_SEARCH):
        mid = (lo * hi).sqrt()
        fits = lp_norm(quantize(x + delta * mid.view(-1, 1, 1, 1)) - x, norm) <= eps
        lo, hi = torch.where(fits, mid, lo), torch.where(fits, hi, mid)
    scaled = quantize(x + delta * lo.view(-1, 1, 1, 1))
    fits = lp_norm(scaled - x, norm) <= eps
    return torch.where(fits.view(-1, 1, 1, 1), scaled, on_grid(x + delta, x, eps, norm))


class Checker:
    """Keeps, per image, the first adversarial example that passed the checks, and its class.

    `x` (N,3,H,W) on the 8-bit grid, `labels` (N,) the classes an attack must move away from. `group`: images
    per forward pass of the attacks run on it (None: all N at once); N may be several batches' survivors.
    """

    def __init__(self, bundle: ModelBundle, x: torch.Tensor, labels: torch.Tensor, eps: float, norm: str,
                 group: int | None = None, count: ForwardCount | None = None):
        self.bundle, self.x, self.labels, self.eps, self.norm = bundle, x, labels, float(eps), norm
        self.group = group
        self.count = count  # its passes are counted under "<the attack's stage> check" (few images each)
        self.success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        self.images = x.clone()
        self.predicted = labels.clone()
        self.forwards = 0  # images passed through the model for checks (bookkeeping for tests/benchmarks)
        self.failed = torch.full((x.shape[0],), float("inf"), device=x.device)  # margin of the last failed check

    @torch.no_grad()
    def count_clean(self) -> None:
        """Images misclassified as they are count as broken (their example is the clean image itself)."""
        pred = logits(self.bundle, self.x, self.group).argmax(1)
        self.forwards += self.x.shape[0]
        wrong = pred != self.labels
        self.success |= wrong
        self.predicted = torch.where(wrong, pred, self.predicted)

    @torch.no_grad()
    def __call__(self, index: torch.Tensor, candidates: torch.Tensor, margins: torch.Tensor | None = None) -> torch.Tensor:
        """Check candidates[k] (K,3,H,W) for images index[k]; (K,) bool, True where the image now counts.

        margins (K,): the candidates' float margins z_y - max_other (< 0: misclassified in float). When given,
        an image whose 8-bit example failed is checked again only for a candidate deeper past the boundary
        than the one that failed: a shallower one rarely survives rounding where a deeper one did not, and an
        image that is adversarial in float but not in 8 bits would otherwise cost a forward pass every step.
        """
        rows = torch.arange(index.shape[0], device=index.device)
        if margins is not None:
            rows = (margins < self.failed[index]).nonzero().flatten()
        ok = torch.zeros(index.shape[0], dtype=torch.bool, device=self.x.device)
        if rows.numel():
            ok[rows] = self._check(index[rows], candidates[rows])
            if margins is not None:
                missed = rows[~ok[rows]]
                self.failed[index[missed]] = margins[missed].float()
        return ok

    def _check(self, index: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        x = self.x[index]
        candidates = candidates.detach().float()
        finite = torch.isfinite(candidates.flatten(1)).all(1)  # a NaN anywhere disqualifies, before rounding
        filled, worth, nearest = to_grid(torch.nan_to_num(candidates), x, self.eps, self.norm)
        ok = self._forward(index, x, filled, finite)
        second = finite & worth & ~ok
        if bool(second.any()):
            ok |= self._forward(index, x, nearest, second)
        return ok

    def _forward(self, index: torch.Tensor, x: torch.Tensor, q: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Count q where allowed, inside the ball, not the clean image, and misclassified by a forward pass."""
        # An example that rounds back to the clean image cannot count (the clean image is classified right).
        valid = allowed & inside(q, x, self.eps, self.norm) & (q != x).flatten(1).any(1)
        ok = torch.zeros_like(valid)
        rows = valid.nonzero().flatten()
        if rows.numel():
            with self.count.during(f"{self.count.stage} check") if self.count else contextlib.nullcontext():
                pred = logits(self.bundle, q[rows], self.group).argmax(1)
            self.forwards += rows.numel()
            fooled = pred != self.labels[index[rows]]
            ok[rows[fooled]] = True
            hit = index[rows[fooled]]
            self.images[hit] = q[rows[fooled]]
            self.predicted[hit] = pred[fooled]
            self.success[hit] = True
        return ok
