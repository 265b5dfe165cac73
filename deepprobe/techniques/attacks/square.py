"""Square Attack (Andriushchenko et al. 2020), L-inf and L2: random search with square updates, one model
query per step and no gradients, so gradient masking cannot stop it.

As in fra31/auto-attack's SquareAttack with AutoAttack's settings (margin loss, p_init 0.8, the schedule
not rescaled to the query budget): the square side is sqrt(p * H * W), with p halved after 10, 50, 200,
500, 1000, 2000, 4000, 6000 and 8000 queries. L-inf starts from vertical stripes of +-eps and proposes a
square of +-eps per channel; L2 starts from a 5x5 grid of centre-weighted blocks and moves the mass of one
square into another. A proposal is kept when it lowers the margin z_y - max_other.

Differences from the reference, none of which changes the search itself: each image draws its own square
positions and signs (per-image random streams, rng.py; the reference shares one square across the batch),
a proposal that changes no pixel is not sent to the model (its answer is known), and an image leaves the
batch once its 8-bit version counts as adversarial (check.Checker).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from ...errors import DeepprobeError
from ...models import ModelBundle
from ...options.attacks import AttackSettings
from . import rng
from .check import Checker
from .common import Active, Adversarial, Seeds, StepProgress, _view, logits, margin
from .common import repeat_runs
from .run import run_attack

P_INIT = 0.8
P_HALVED_AFTER = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # queries after which p halves


def square(bundle: ModelBundle, x: torch.Tensor, y, eps: float, *, norm: str = "linf", queries: int = 5000,
           restarts: int = 1, p_init: float = P_INIT, seeds: Seeds = None,
           progress: StepProgress | None = None) -> Adversarial:
    """Square Attack on `x` (N,3,H,W in [0,1], rounded to 8 bits first) with true classes `y`, at most
    `queries` proposals per image and restart (plus one for the start). `seeds` as in `apgd`."""
    AttackSettings(norm=norm, restarts=restarts, queries=queries)  # checks the values
    if not 0 < p_init <= 1:
        raise DeepprobeError(f"p_init must be in (0, 1], got {p_init}")
    return run_attack(bundle, x, y, eps, norm, seeds,
                      lambda checker, keys: search(bundle, checker, keys, queries=queries, restarts=restarts,
                                                   p_init=p_init, progress=progress))


def search(bundle: ModelBundle, checker: Checker, keys: torch.Tensor, *, queries: int, restarts: int,
           p_init: float = P_INIT, progress: StepProgress | None = None) -> torch.Tensor:
    """Square Attack on the images the checker has not counted yet; returns the model queries per image."""
    return repeat_runs(checker, keys, restarts, queries, progress,
                  lambda todo, k, _r, report: _run(bundle, checker, todo, k, queries=queries, p_init=p_init,
                                                   progress=report))


def schedule(p_init: float, query: int) -> float:
    """p for this query (the fraction of the image a square covers), as AutoAttack schedules it."""
    return p_init / 2 ** sum(query > q for q in P_HALVED_AFTER)


@dataclass
class _State(Active):
    x0: torch.Tensor
    y: torch.Tensor
    keys: torch.Tensor
    x_best: torch.Tensor
    margin: torch.Tensor  # margin of x_best (lower is better; <= 0: misclassified)
    up: torch.Tensor | None = None  # L-inf: x0 + eps and x0 - eps in [0,1], the only values a square writes
    down: torch.Tensor | None = None


def _run(bundle, checker: Checker, index: torch.Tensor, keys: torch.Tensor, *, queries: int, p_init: float,
         progress: StepProgress | None) -> torch.Tensor:
    eps, norm = checker.eps, checker.norm
    x0, y = checker.x[index], checker.labels[index]
    cost = torch.zeros(index.shape[0], dtype=torch.long, device=x0.device)
    start = _start_linf(keys, x0, eps) if norm == "linf" else _start_l2(keys, x0, eps)
    s = _State(index=torch.arange(index.shape[0], device=x0.device), x0=x0, y=y, keys=keys, x_best=start,
               margin=margin(logits(bundle, start, checker.group), y))
    if norm == "linf":
        s.up, s.down = (x0 + eps).clamp(0, 1), (x0 - eps).clamp(0, 1)
    cost += 1
    s.hand_over(checker, index, s.margin <= 0, s.x_best, s.margin)
    for i in range(queries):
        if len(s) == 0:
            break
        p = schedule(p_init, i)
        draw = rng.derive(s.keys, "query", i)
        proposal = _propose_linf(draw, s, eps, p) if norm == "linf" else _propose_l2(draw, s, eps, p)
        changed = (proposal != s.x_best).flatten(1).any(1)
        rows = changed.nonzero().flatten()
        if rows.numel():
            asked = proposal if rows.numel() == len(s) else proposal[rows]
            new_margin = margin(logits(bundle, asked, checker.group), s.y[rows])
            cost[s.index[rows]] += 1
            keep = (new_margin < s.margin[rows]) | (new_margin <= 0)
            rows, new_margin = rows[keep], new_margin[keep]
            s.x_best[rows] = proposal[rows]
            s.margin[rows] = new_margin
            fooled = torch.zeros_like(changed)
            fooled[rows[new_margin <= 0]] = True
            s.hand_over(checker, index, fooled, s.x_best, s.margin)
        if progress is not None:
            progress(i + 1, queries)
    return cost


def _square_side(p: float, h: int, w: int, smallest: int) -> int:
    return min(max(int(round(math.sqrt(p * h * w))), smallest), h, w)


def _corner(u: torch.Tensor, size: int, s: int) -> torch.Tensor:
    """Top-left coordinate in [0, size - s) from uniforms (as the reference's randint(0, size - s))."""
    return (u * (size - s)).long().clamp(max=max(size - s - 1, 0))


def _mask(top: torch.Tensor, left: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """(M,1,H,W) bool: each image's own s x s square."""
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + s)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + s)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


# ----- L-inf ----------------------------------------------------------------------------------------------
def _start_linf(keys: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
    """Vertical stripes: each column of each channel moved by +-eps."""
    c, _, w = x0.shape[1:]
    return (x0 + eps * rng.signs(rng.derive(keys, "start"), (c, 1, w))).clamp(0, 1)


def _propose_linf(draw: torch.Tensor, s: _State, eps: float, p: float) -> torch.Tensor:
    c, h, w = s.x0.shape[1:]
    side_ = _square_side(p, h, w, 1)
    u = rng.uniform(draw, (2 + c,))
    square = _mask(_corner(u[:, 0], h, side_), _corner(u[:, 1], w, side_), side_, h, w)
    up = (u[:, 2:] >= 0.5)[:, :, None, None]
    # The reference adds 2*eps*sign to x_best and clips to the ball: inside the square that is x0 + eps*sign.
    return torch.where(square, torch.where(up, s.up, s.down), s.x_best)


# ----- L2 -------------------------------------------------------------------------------------------------
def _unit_l2(delta: torch.Tensor) -> torch.Tensor:
    return delta / (_view(delta.flatten(1).norm(dim=1)) + 1e-12)


@lru_cache(maxsize=64)
def _rings(rows: int, cols: int) -> torch.Tensor:
    """Concentric rectangles around the centre weighted 1/(k+1)^2, unit L2 norm (the paper's eta)."""
    out = torch.zeros(rows, cols)
    r0, c0 = rows // 2, cols // 2
    for k in range(max(r0, c0) + 1):
        out[max(r0 - k, 0):min(r0 + k + 1, rows), max(c0 - k, 0):min(c0 + k + 1, cols)] += 1.0 / (k + 1) ** 2
    return out / out.norm()


@lru_cache(maxsize=64)
def _eta(s: int) -> torch.Tensor:
    """(s, s) update shape: rings in the top half, negated rings in the bottom half, unit L2 norm."""
    top = s // 2
    out = torch.cat([_rings(top, s), -_rings(s - top, s)]) if top else -_rings(s, s)
    return out / out.norm()


def _etas(flip: torch.Tensor, s: int, device: torch.device) -> torch.Tensor:
    """(M,1,s,s): eta, transposed for the images whose flip is True."""
    eta = _eta(s).to(device)
    return torch.where(flip[:, None, None, None], eta.T, eta)


def _start_l2(keys: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
    """A grid of eta blocks (side H/5) with a random sign per image, block and channel, scaled to eps."""
    n, c, h, w = x0.shape
    s = h // 5
    start = (h - 5 * s) // 2
    delta = torch.zeros_like(x0)
    for bi in range(h // s):
        for bj in range(w // s):
            k = rng.derive(keys, "start", bi, bj)
            u = rng.uniform(k, (1 + c,))
            block = _etas(u[:, 0] < 0.5, s, x0.device) * torch.where(u[:, 1:] < 0.5, -1.0, 1.0)[:, :, None, None]
            top, left = start + bi * s, start + bj * s
            if top + s <= h and left + s <= w:
                delta[:, :, top:top + s, left:left + s] += block
    return (x0 + _unit_l2(delta) * eps).clamp(0, 1)


def _window(t: torch.Tensor, top: torch.Tensor, left: torch.Tensor, s: int) -> tuple:
    """Advanced indices selecting each image's own s x s window of a (M,C,H,W) tensor (-> (M,s,s,C))."""
    span = torch.arange(s, device=t.device)
    rows = (top[:, None] + span)[:, :, None]
    cols = (left[:, None] + span)[:, None, :]
    return torch.arange(t.shape[0], device=t.device)[:, None, None], slice(None), rows, cols


def _propose_l2(draw: torch.Tensor, s: _State, eps: float, p: float) -> torch.Tensor:
    c, h, w = s.x0.shape[1:]
    side_ = _square_side(p, h, w, 3)
    side_ = side_ + 1 if side_ % 2 == 0 and side_ < min(h, w) else side_
    u = rng.uniform(draw, (5 + c,))
    top1, left1 = _corner(u[:, 0], h, side_), _corner(u[:, 1], w, side_)
    top2, left2 = _corner(u[:, 2], h, side_), _corner(u[:, 3], w, side_)
    sign = torch.where(u[:, 5:] < 0.5, -1.0, 1.0)[:, :, None, None]
    delta = s.x_best - s.x0
    first, second = _window(delta, top1, left1, side_), _window(delta, top2, left2, side_)
    old = delta[first].permute(0, 3, 1, 2)  # (M,C,s,s)
    old_size = old.pow(2).sum((-2, -1), keepdim=True).sqrt()
    both = _mask(top1, left1, side_, h, w) | _mask(top2, left2, side_, h, w)
    in_windows = _view((delta * both).flatten(1).norm(dim=1))
    total = _view(delta.flatten(1).norm(dim=1))
    new = _etas(u[:, 4] < 0.5, side_, delta.device) * sign + old / (1e-12 + old_size)
    budget = ((eps ** 2 - total ** 2).clamp_min(0) / c + in_windows ** 2).sqrt()
    new = new / (1e-12 + new.pow(2).sum((-2, -1), keepdim=True).sqrt()) * budget
    delta = delta.clone()
    delta[second] = 0.0
    delta[first] = new.permute(0, 2, 3, 1)
    return (s.x0 + _unit_l2(delta) * eps).clamp(0, 1)
