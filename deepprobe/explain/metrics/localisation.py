"""Localisation metrics of Quantus 0.6: does the map fall on the object? Need a binary mask per image (N,H,W);
an empty mask gives nan (Quantus does the same), which the summaries leave out and count."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...errors import DeepprobeError
from .core import MetricScores, as_seeds, prepare, ranks, to_cpu


def _flat(maps: torch.Tensor, masks: torch.Tensor, abs_: bool, normalise: bool):
    if masks.shape != maps.shape:
        raise DeepprobeError(f"masks must match the maps' shape {tuple(maps.shape)}, got {tuple(masks.shape)}")
    a = prepare(maps, abs_, normalise).flatten(1).double()
    s = masks.to(a.device).flatten(1).bool()
    return a, s, s.sum(1) == 0


def _nan_where(values: torch.Tensor, empty: torch.Tensor) -> MetricScores:
    return MetricScores(to_cpu(torch.where(empty, torch.full_like(values, float("nan")), values)))


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, *, abs: bool = False,
                  normalise: bool = True) -> MetricScores:
    """Pointing game (Zhang et al. 2018; `quantus.PointingGame`): 1 when a pixel holding the map's largest value
    lies inside the mask, else 0; higher is better."""
    a, s, empty = _flat(maps, masks, abs, normalise)
    top = a == a.amax(1, keepdim=True)
    return _nan_where((top & s).any(1).double(), empty)


def relevance_mass(maps: torch.Tensor, masks: torch.Tensor, *, abs: bool = False,
                   normalise: bool = True) -> MetricScores:
    """Relevance mass accuracy (Arras et al. 2021; `quantus.RelevanceMassAccuracy`): the share of the map's sum
    that falls inside the mask; higher is better."""
    a, s, empty = _flat(maps, masks, abs, normalise)
    return _nan_where((a * s).sum(1) / a.sum(1), empty)


def relevance_rank(maps: torch.Tensor, masks: torch.Tensor, *, abs: bool = False, normalise: bool = True,
                   seeds: int | Sequence[int] = 0) -> MetricScores:
    """Relevance rank accuracy (Arras et al. 2021; `quantus.RelevanceRankAccuracy`): with K the mask's size, the
    share of the map's K highest pixels that lie inside the mask; higher is better."""
    a, s, empty = _flat(maps, masks, abs, normalise)
    rank = ranks(a, as_seeds(seeds, a.shape[0]))
    k = s.sum(1, keepdim=True)
    hits = ((rank < k) & s).sum(1).double()
    return _nan_where(hits / k[:, 0].clamp_min(1).double(), empty)
