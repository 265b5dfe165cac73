"""Complexity metrics of Quantus 0.6: how concentrated is the map? (Read from the map alone: no model pass.)"""
from __future__ import annotations

import torch

from .core import MetricScores, prepare, to_cpu


def sparseness(maps: torch.Tensor, *, abs: bool = True, normalise: bool = True) -> MetricScores:
    """Sparseness (Chalasani et al. 2020; `quantus.Sparseness`): Gini index of the map's values (after adding
    1e-7, as Quantus), sum_i (2i - n - 1) a_(i) / (n sum a) over the sorted values; higher is sparser."""
    a = prepare(maps, abs, normalise).flatten(1).double() + 1e-7
    n = a.shape[1]
    ordered = a.sort(1).values
    weights = 2 * torch.arange(1, n + 1, dtype=torch.float64, device=a.device) - n - 1
    return MetricScores(to_cpu((ordered * weights).sum(1) / (n * a.sum(1))))


def complexity(maps: torch.Tensor, *, abs: bool = True, normalise: bool = True) -> MetricScores:
    """Complexity (Bhatt et al. 2020; `quantus.Complexity`): entropy of the map read as a distribution,
    -sum p log(p + 1e-12) with p = |a| / sum |a|; lower is simpler."""
    a = prepare(maps, abs, normalise).flatten(1).double()
    p = a / a.abs().sum(1, keepdim=True)
    return MetricScores(to_cpu(-(p * torch.log(p + 1e-12)).sum(1)))
