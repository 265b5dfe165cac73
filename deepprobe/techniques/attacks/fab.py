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
from . import rng
from .check import Checker, lp_norm
from .common import Active, Adversarial, Seeds, StepProgress, _view, offset_progress, loss_and_grad, random_start
from .run import run_attack

ALPHA_MAX = 0.1  # most weight the projection of the original gets in a step
ETA = 1.05  # overshoot of each projection
BETA = 0.9  # step back towards the original after a success
START_RADIUS = 0.5  # restarts after the first begin at a random point at START_RADIUS * eps


def fab_targeted(bundle: ModelBundle, x: torch.Tensor, y, eps: float, *, norm: str = "linf", steps: int = 100,
                 restarts: int = 1, targets: int = 9, seeds: Seeds = None,
                 progress: StepProgress | None = None) -> Adversarial:
    """FAB-T on `x` (N,3,H,W in [0,1], rounded to 8 bits first) with true classes `y`: one run per runner-up
    class (2nd to (targets+1)-th most likely) on the images still robust. Success: misclassified within
    eps, checked on the 8-bit image. `seeds` as in `apgd` (used by restarts after the first)."""
    return run_attack(bundle, x, y, eps, norm, seeds,
                      lambda checker, keys: targeted(bundle, checker, keys, steps=steps, restarts=restarts,
                                                     targets=targets, progress=progress))


def targeted(bundle: ModelBundle, checker: Checker, keys: torch.Tensor, *, steps: int, restarts: int, targets: int,
             progress: StepProgress | None) -> torch.Tensor:
    """FAB-T over the runner-up classes of each clean image; returns the iterations spent per image."""
    with torch.no_grad():
        ranked = bundle.net(checker.x).float().argsort(1, descending=True)
    targets = max(1, min(targets, ranked.shape[1] - 1))
    cost = torch.zeros(checker.x.shape[0], dtype=torch.long, device=checker.x.device)
    total = targets * restarts * steps
    for j in range(targets):
        for r in range(restarts):
            todo = (~checker.success).nonzero().flatten()
            if todo.numel() == 0:
                break
            report = offset_progress(progress, (j * restarts + r) * steps, total)
            cost[todo] += _run(bundle, checker, todo, ranked[todo, j + 1],
                               rng.derive(keys[todo], "target", j, "restart", r) if r > 0 else None,
                               steps=steps, progress=report)
    if progress is not None:
        progress(total, total)
    return cost


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
        gap = E.Objective(lambda f, s=s: (f.logits.gather(1, s.target[:, None]) - f.logits.gather(1, s.y[:, None]))[:, 0],
                          "z_target - z_label", needs_logits=True)
        f, _, g = loss_and_grad(bundle, s.x1, gap)
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
        fooled = bundle.net(s.x1).argmax(1) != s.y
        done = torch.zeros_like(fooled)
        within = fooled & (lp_norm(s.x1 - s.x0, norm) <= eps)
        if bool(within.any()):
            rows = within.nonzero().flatten()
            # A point just past the boundary often rounds back to the clean class on the 8-bit grid: try it
            # pushed out along its own direction to the full budget first, then as it is.
            found = s.x1[rows]
            change = found - s.x0[rows]
            pushed = s.x0[rows] + change * _view(eps / lp_norm(change, norm).clamp_min(1e-12))
            done[rows] = checker(index[s.index[rows]], pushed, found)
        s.x1 = torch.where(_view(fooled), s.x0 + (s.x1 - s.x0) * BETA, s.x1)
        if bool(done.any()):
            s.keep(~done)
        if progress is not None:
            progress(i + 1, steps)
    return cost


def hyperplane_step(t: torch.Tensor, w: torch.Tensor, c: torch.Tensor, norm: str) -> torch.Tensor:
    """Per row, the smallest d (L-inf or L2) with <w, d> = c and 0 <= t + d <= 1; where the box cannot
    reach the plane, the d that gets closest. t, w: (R, n); c: (R,).

    With c >= 0 (else flip w), every coordinate moves towards sign(w_i) by d_i = min(lam * a_i, room_i),
    a_i = 1 (L-inf) or |w_i| (L2), room_i the distance to the box edge. <w, d>(lam) is piecewise linear
    and increasing, so after sorting the breakpoints room_i / a_i, one cumulative sum and a search find lam.
    """
    flip = torch.where(c < 0, -1.0, 1.0).to(w.dtype)
    w, c = w * flip[:, None], c.abs()
    aw = w.abs()
    room = torch.where(w > 0, 1 - t, t).clamp_min(0)
    a = torch.ones_like(aw) if norm == "linf" else aw
    moving = aw > 0
    breaks = torch.where(moving, room / torch.where(moving, a, torch.ones_like(a)), torch.full_like(a, float("inf")))
    breaks, order = breaks.sort(1)
    slope = (aw * a).gather(1, order).double()  # rate of <w, d> in lam while the coordinate is free
    full = (aw * room).gather(1, order).double()  # its share once at the box edge
    before = full.cumsum(1) - full  # sum over coordinates already at the edge
    free = slope.flip(1).cumsum(1).flip(1)  # sum of rates of those still free
    reach = torch.where(torch.isinf(breaks), torch.full_like(free, float("inf")), before + breaks.double() * free)
    k = torch.searchsorted(reach, c.double()[:, None].contiguous()).clamp(max=w.shape[1] - 1)
    lam = (c.double()[:, None] - before.gather(1, k)) / free.gather(1, k).clamp_min(1e-300)
    lam = torch.where(reach[:, -1:] < c.double()[:, None], torch.full_like(lam, float("inf")), lam)
    step = torch.minimum(lam.float() * a, room) * torch.sign(w)
    return torch.where(moving, step, torch.zeros_like(step))  # w (flipped) and c (made >= 0) agree: <w0, d> = c0
