"""Fooling a depth estimator: a region looks nearer (or farther) by a requested factor, the rest as it was.

"Nearer by a factor f" is read on the region's mean prediction: its mean depth divided by f (metric depth,
larger = farther) or its mean inverse depth multiplied by f (Depth Anything's relative output, larger =
nearer). Per image the loss is a hinge on the log-factor still missing plus the relative change of the rest
of the image (mean |d - d0| / |d0| outside the region), so the change stays on the region. It runs on the loop
detectors and segmenters use (techniques/fool_tasks.py): PGD in an L-inf ball (DAG's unbounded steps on
request), the factor judged on the 8-bit image, extra rounds at a doubled margin for images the rounding
pulled back under the factor.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import engine as E
from ..errors import DeepprobeError
from ..models import ModelBundle
from ..models.depth import DepthMap, Region, depth_net, region_mask, region_means
from ..models.tasks import DEPTH, require_task
from ..options.fool import DEFAULT_FACTOR, FOUNDATION_STEPS
from ..options.ranges import check_ranges
from .fool_tasks import TaskAttackResult, as_batch, attack_rounds

MARGIN = 0.02  # aim for log(factor) + MARGIN (doubled in each extra round): 8-bit rounding must not undo it
KEEP = 1.0  # weight of the rest of the image's relative change in the loss


def fool_depth(bundle: ModelBundle, x: torch.Tensor, region: Region, *, nearer: bool = True,
               factor: float = DEFAULT_FACTOR, method: str = "pgd", eps: float | None = None,
               alpha: float | None = None, steps: int | None = None, rounds: int = 2, seed: int = 0,
               callback: Callable | None = None) -> TaskAttackResult:
    """Make `region` (x0, y0, x1, y1 in the images' pixels) look `factor` times nearer (or farther, `nearer`
    False) on each image of a (N,3,H,W) batch in [0,1]; success when the saved image's region reaches it."""
    check_ranges("fool", {"eps": eps, "alpha": alpha, "steps": steps, "rounds": rounds, "factor": factor})
    require_task(bundle, "fool_depth", DEPTH)
    x = as_batch(bundle, x)
    mask = region_mask(region, int(x.shape[-2]), int(x.shape[-1]), x.device)
    larger_is_nearer = depth_net(bundle.net).larger_is_nearer
    with torch.no_grad():
        d0 = bundle.net(x).float()
    r0, o0 = region_means(d0, mask)
    if bool((r0 <= 0).any()):
        raise DeepprobeError(f"the region's mean predicted depth is {float(r0.min()):.4g}: a factor needs a positive "
                             "depth there")
    sign = 1.0 if nearer == larger_is_nearer else -1.0  # +1: the prediction has to grow
    goal = math.log(float(factor))
    rest = (~mask).to(d0.dtype)

    def gain(d: torch.Tensor, todo) -> torch.Tensor:
        """(n,) how far the region moved the asked way, as a log-factor."""
        inside, _ = region_means(d, mask)
        return sign * torch.log(inside.clamp_min(1e-6) / r0[todo].clamp_min(1e-6))

    def drift(d: torch.Tensor, todo) -> torch.Tensor:
        """(n,) mean relative change of the prediction outside the region."""
        if not rest.any():
            return d.new_zeros(d.shape[0])
        change = (d - d0[todo]).abs() / d0[todo].abs().clamp_min(1e-6)
        return (change * rest).sum((1, 2)) / rest.sum()

    def objective(margin: float, todo) -> E.Objective:
        def loss(f):
            d = f.logits.float()
            return F.relu(goal + margin - gain(d, todo)) + KEEP * drift(d, todo)
        return E.Objective(loss, f"depth({'nearer' if nearer else 'farther'} x{factor:g})", needs_logits=True)

    def done(margin: float, todo) -> Callable:
        return lambda f: (gain(f.logits.detach().float(), todo) >= goal + margin).cpu()

    def judge(images: torch.Tensor):
        with torch.no_grad():
            d = bundle.net(images.to(x.device)).float()
        everyone = torch.arange(len(d), device=d.device)
        moved = gain(d, everyone)
        inside, outside = region_means(d, mask)
        notes = []
        for i in range(len(d)):
            rest_factor = None if outside is None else math.exp(abs(math.log(max(float(outside[i]), 1e-6)
                                                                             / max(float(o0[i]), 1e-6))))
            notes.append({"factor_asked": float(factor), "factor": round(math.exp(float(moved[i])), 6),
                          "rest_factor": None if rest_factor is None else round(rest_factor, 6),
                          "region_mean_before": round(float(r0[i]), 6),
                          "region_mean_after": round(float(inside[i]), 6)})
        after = [DepthMap(m.cpu(), larger_is_nearer, region) for m in d]
        return (moved >= goal - 1e-9).cpu(), (moved / goal).clamp(0, 1).cpu(), after, notes

    before = [DepthMap(m.cpu(), larger_is_nearer, region) for m in d0]
    text = f"{'nearer' if nearer else 'farther'} x{factor:g} at {','.join(f'{v:g}' for v in region)}"
    return attack_rounds(bundle, x, before, text, objective, done, judge, lambda attempt: MARGIN * 2 ** attempt,
                         method=method, eps=eps, alpha=alpha, steps=steps or FOUNDATION_STEPS, rounds=rounds,
                         seed=seed, callback=callback)
