"""Targeted FAB (Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive boundary
attack"), L-inf and L2, as AutoAttack's FAB-T runs it.

Each step linearizes the decision boundary between the true class y and the target t (the 2nd, 3rd, ...
most likely clean class), projects both the current point and the original onto that hyperplane inside the
[0,1] box (the smallest change in the attack's norm), and moves to a convex combination of the two
projections (weight on the original at most ALPHA_MAX), overshooting by ETA. Once a point is misclassified
it steps back towards the original by BETA, which is what drives the change down to the boundary.
FAB looks for the smallest change; an image counts as broken only when a misclassified point lies within
eps (and its 8-bit version passes the checks), at which moment it leaves the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ... import engine as E
from ...models import ModelBundle
from ...options.attacks import AttackSettings
from .check import Checker, lp_norm
from .common import (Active, Adversarial, Seeds, StepProgress, _view, logits, loss_and_grad, over_targets,
                     random_start)
from .common import repeat_runs
from .run import run_attack

ALPHA_MAX = 0.1  # most weight the projection of the original gets in a step
ETA = 1.05  # overshoot of each projection
BETA = 0.9  # step back towards the original after a success
START_RADIUS = 0.5  # restarts after the first begin at a random point at START_RADIUS * eps
NEWTON_STEPS = 50  # cap on the Newton steps of one projection (2-15 in practice)
NEWTON_TOLERANCE = 1e-7  # relative gap to the plane at which a projection is done


def fab_targeted(bundle: ModelBundle, x: torch.Tensor, y, eps: float, *, norm: str = "linf", steps: int = 100,
                 restarts: int = 1, targets: int = 9, seeds: Seeds = None,
                 progress: StepProgress | None = None) -> Adversarial:
    """FAB-T on `x` (N,3,H,W in [0,1], rounded to 8 bits first) with true classes `y`: one run per runner-up
    class (2nd to (targets+1)-th most likely) on the images still robust. Success: misclassified within
    eps, checked on the 8-bit image. `seeds` as in `apgd` (used by restarts after the first)."""
    AttackSettings(norm=norm, steps=steps, restarts=restarts, targets=targets)  # checks the values
    return run_attack(bundle, x, y, eps, norm, seeds,
                      lambda checker, keys: targeted(bundle, checker, keys, steps=steps, restarts=restarts,
                                                     targets=targets, progress=progress))


def targeted(bundle: ModelBundle, checker: Checker, keys: torch.Tensor, *, steps: int, restarts: int, targets: int,
             progress: StepProgress | None) -> torch.Tensor:
    """FAB-T over the runner-up classes of each clean image; returns the iterations spent per image."""
    def per_target(target: torch.Tensor, k: torch.Tensor, report: StepProgress | None) -> torch.Tensor:
        return repeat_runs(checker, k, restarts, steps, report,
                           lambda todo, kr, r, rep: _run(bundle, checker, todo, target[todo], kr if r > 0 else None,
                                                         steps=steps, progress=rep))
    return over_targets(bundle, checker, keys, targets, restarts * steps, progress, per_target)


@dataclass
class _State(Active):
    x0: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor
    x1: torch.Tensor  # current point


def _run(bundle, checker: Checker, index: torch.Tensor, target: torch.Tensor, start_keys: torch.Tensor | None, *,
         steps: int, progress: StepProgress | None) -> torch.Tensor:
    """One FAB run towards `target` on the images `index` (from x, or from a random point when start_keys
    are given); returns the iterations spent on each."""
    eps, norm = checker.eps, checker.norm
    x0, y = checker.x[index], checker.labels[index]
    x1 = x0.clone() if start_keys is None else random_start(start_keys, x0, START_RADIUS * eps, norm)
    s = _State(index=torch.arange(index.shape[0], device=x0.device), x0=x0, y=y, target=target, x1=x1)
    cost = torch.zeros(index.shape[0], dtype=torch.long, device=x0.device)
    for i in range(steps):
        if len(s) == 0:
            break
        f, _, g = loss_and_grad(bundle, s.x1, lambda rows, s=s: _gap(s.y[rows], s.target[rows]), checker.group)
        cost[s.index] += 1
        # Boundary f + g.(z - x1) = 0: project the current point and the original onto it, inside the box.
        m = len(s)
        flat_g = g.flatten(1)
        offset = (flat_g * (s.x1 - s.x0).flatten(1)).sum(1)
        d = hyperplane_step(torch.cat([s.x1, s.x0]).flatten(1), torch.cat([flat_g, flat_g]),
                            torch.cat([-f, offset - f]), norm).view(2 * m, *s.x0.shape[1:])
        size = lp_norm(d, norm).clamp_min(1e-8)
        alpha = (size[:m] / (size[:m] + size[m:])).clamp(0, ALPHA_MAX)
        s.x1 = ((s.x1 + ETA * d[:m]) * _view(1 - alpha) + (s.x0 + ETA * d[m:]) * _view(alpha)).clamp(0, 1)
        out = logits(bundle, s.x1, checker.group)
        fooled = out.argmax(1) != s.y
        found = s.x1
        s.x1 = torch.where(_view(fooled), s.x0 + (s.x1 - s.x0) * BETA, s.x1)
        # (a point just past the boundary rounds back to the clean image; the checker then tries its change
        # scaled up to the budget, check.to_grid). No margins: FAB's points all sit just past the boundary
        # and each new direction may survive rounding where the last did not, so every one is checked.
        s.hand_over(checker, index, fooled & (lp_norm(found - s.x0, norm) <= eps), found, None)
        if progress is not None:
            progress(i + 1, steps)
    return cost


def _gap(y: torch.Tensor, target: torch.Tensor) -> E.Objective:
    """z_target - z_label: FAB's linearized boundary function."""
    return E.Objective(lambda f: (f.logits.gather(1, target[:, None]) - f.logits.gather(1, y[:, None]))[:, 0],
                       "z_target - z_label", needs_logits=True)


def hyperplane_step(t: torch.Tensor, w: torch.Tensor, c: torch.Tensor, norm: str) -> torch.Tensor:
    """Per row, the smallest d (L-inf or L2) with <w, d> = c and 0 <= t + d <= 1; where the box cannot
    reach the plane, the d that gets closest. t, w: (R, n); c: (R,).

    With c >= 0 (else flip w), every coordinate moves towards sign(w_i) by d_i = min(lam * a_i, room_i),
    a_i = 1 (L-inf) or |w_i| (L2), room_i the distance to the box edge. h(lam) = <w, d(lam)> is piecewise
    linear, increasing and concave, so Newton's method from lam = 0 climbs to the root from below and lands
    on it exactly once it reaches the root's linear piece (a few O(n) passes; no sort of the n coordinates).
    """
    flip = torch.where(c < 0, -1.0, 1.0).to(w.dtype)
    w, c = w * flip[:, None], c.abs().double()
    aw = w.abs()
    room = torch.where(w > 0, 1 - t, t).clamp_min(0)
    a = torch.ones_like(aw) if norm == "linf" else aw
    reachable = (aw * room).sum(1, dtype=torch.float64) >= c
    lam = torch.zeros_like(c)
    rows = reachable.nonzero().flatten()
    for _ in range(NEWTON_STEPS):
        if rows.numel() == 0:
            break
        lam_r = lam[rows].float()[:, None]
        a_r, room_r, aw_r = a[rows], room[rows], aw[rows]
        free = lam_r * a_r < room_r
        h = (aw_r * torch.where(free, lam_r * a_r, room_r)).sum(1, dtype=torch.float64)
        slope = (aw_r * a_r * free).sum(1, dtype=torch.float64)
        gap = c[rows] - h
        done = (gap <= NEWTON_TOLERANCE * c[rows]) | (slope <= 0)
        lam[rows] = torch.where(done, lam[rows], lam[rows] + gap / slope.clamp_min(1e-300))
        rows = rows[~done]
    lam = torch.where(reachable, lam, torch.full_like(lam, float("inf")))
    step = torch.minimum(lam.float()[:, None] * a, room) * torch.sign(w)
    return torch.where(aw > 0, step, torch.zeros_like(step))  # w (flipped) and c (made >= 0) agree: <w0, d> = c0
