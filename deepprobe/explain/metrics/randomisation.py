"""Randomisation metrics: a map that explains the model must change when the class or the weights change.

`random_logit` follows `quantus.RandomLogit` (with Quantus's SSIM, in torch); `sanity` is deepprobe's cascading
model-parameter randomization (`explain/sanity.py`; Quantus's `MPRT` with `return_last_correlation`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .core import MetricScores, as_seeds, generators, prepare, to_cpu

SSIM_WINDOW = 7  # skimage's default win_size, which Quantus keeps


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = SSIM_WINDOW) -> torch.Tensor:
    """Quantus's `ssim` of each pair of maps, (N,...) x (N,...) -> (N,) float64: skimage's
    `structural_similarity` of the *flattened* maps (1-D, as Quantus passes them), uniform window of 7, sample
    covariance, K1 = 0.01, K2 = 0.03, data range = max - min over both maps, mean over the positions whose window
    lies inside the signal."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    both = torch.cat([a, b], 1)
    data_range = both.amax(1) - both.amin(1)
    c1, c2 = ((0.01 * data_range) ** 2)[:, None], ((0.03 * data_range) ** 2)[:, None]

    def mean(v: torch.Tensor) -> torch.Tensor:
        return F.avg_pool1d(v[:, None], window, stride=1)[:, 0]

    cov_norm = window / (window - 1)
    ux, uy = mean(a), mean(b)
    vx = cov_norm * (mean(a * a) - ux * ux)
    vy = cov_norm * (mean(b * b) - uy * uy)
    vxy = cov_norm * (mean(a * b) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    return s.mean(1)


def off_classes(targets: torch.Tensor, num_classes: int, seeds: Sequence[int]) -> torch.Tensor:
    """One class per image drawn uniformly from the classes other than its target (as Quantus draws them)."""
    draws = torch.stack([torch.randint(0, num_classes - 1, (1,), generator=g, device=g.device)[0]
                         for g in generators(seeds, targets.device, stream=5)])
    return draws + (draws >= targets).long()


def random_logit(explainer: Callable, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor,
                 num_classes: int, *, abs: bool = False, normalise: bool = True, seeds: int | Sequence[int] = 0,
                 classes: torch.Tensor | None = None) -> MetricScores:
    """Random logit (Sixt et al. 2020; `quantus.RandomLogit`): SSIM between the map of the target and the map of
    a random other class (`classes` replaces the draw); lower is better (the map depends on the class)."""
    n = x.shape[0]
    seeds = as_seeds(seeds, n)
    other = off_classes(targets, num_classes, seeds) if classes is None else classes.to(x.device)
    with torch.enable_grad():
        again = explainer(x, other, seeds)
    value = ssim(prepare(maps.to(x.device), abs, normalise), prepare(again, abs, normalise))
    return MetricScores(to_cpu(value), extra={"class": other.cpu()})


def sanity(probe, x: torch.Tensor, explainers: dict[str, Callable], maps: dict[str, torch.Tensor], seed: int = 0,
           callback: Callable[[int], None] | None = None) -> dict[str, MetricScores]:
    """Cascading model-parameter randomization (Adebayo et al. 2018; Quantus `MPRT` with
    `return_last_correlation`, layer groups instead of every layer) for several maps on one randomized copy:
    value = Spearman correlation of the map with the original once every group is random (lower is better); the
    curve has one point per group. `explainers[name](probe, x)` recomputes a map. One seed for every batch, so
    every image meets the same random network."""
    from ..sanity import cascade_many

    layers, corr = cascade_many(probe, x, explainers, {k: v.to(x.device) for k, v in maps.items()}, seed, callback)
    return {name: MetricScores(to_cpu(c[:, -1]), to_cpu(c), layers) for name, c in corr.items()}
