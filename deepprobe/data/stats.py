"""Confidence intervals for figures measured over a data set (no scipy needed).

Accuracies are proportions: the Wilson score interval keeps its coverage near 95% for small n and for
proportions near 0 or 1 (where the normal "p +- 1.96 se" interval collapses to a point), which is exactly where
robust accuracies live. Means of per-image scores use the normal approximation.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal
WILSON = "Wilson score interval, 95%"
NORMAL = "normal approximation, 95%"


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of successes/n; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_ci95(values: Iterable[float]) -> tuple[float, tuple[float, float], int]:
    """(mean, (low, high), n) with the normal approximation mean +- 1.96 * sd / sqrt(n) (sd with n - 1)."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return math.nan, (math.nan, math.nan), 0
    mean = sum(values) / n
    if n == 1:
        return mean, (mean, mean), 1
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = Z95 * sd / math.sqrt(n)
    return mean, (mean - half, mean + half), n
