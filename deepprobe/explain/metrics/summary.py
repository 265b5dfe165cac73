"""From per-image scores to what a paper reports: mean, 95% interval and count per method and metric, and a
ranking of the methods per metric that says which differences are significant (torch-free).

The test is paired over images (each image scored by every method): the Wilcoxon signed-rank test from scipy
(two-sided; zero differences dropped), or the exact sign test when scipy is missing. The p-values of the pairs
of one metric are Holm-corrected, so "significant" holds at 5% for all pairs of that metric together.
Images where a metric is undefined (nan: an empty mask, a constant map) are left out and counted.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ...data.stats import mean_ci95
from ...options.evaluate import METRICS

ALPHA = 0.05


def describe(values: Sequence[float]) -> dict:
    """{"mean", "ci95": [low, high], "n"} over the finite values (normal approximation); "undefined": nan count."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    mean, (low, high), n = mean_ci95(finite)
    out = {"mean": _round(mean), "ci95": [_round(low), _round(high)], "n": n}
    if len(finite) != len(values):
        out["undefined"] = len(values) - len(finite)
    return out


def _round(value: float, digits: int = 6):
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def paired_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, int, str]:
    """Two-sided p-value that the paired scores a and b differ, the number of pairs used, and the test's name."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    diffs = [x - y for x, y in pairs if x != y]
    if not diffs:
        return 1.0, len(pairs), test_name()
    try:
        from scipy.stats import wilcoxon
    except ImportError:
        return _sign_test(diffs), len(pairs), test_name()
    return float(wilcoxon(diffs).pvalue), len(pairs), test_name()


def test_name() -> str:
    try:
        import scipy.stats  # noqa: F401
    except ImportError:
        return "exact sign test, two-sided, Holm-corrected per metric"
    return "Wilcoxon signed-rank (scipy), two-sided, Holm-corrected per metric"


def _sign_test(diffs: Sequence[float]) -> float:
    n, k = len(diffs), sum(d > 0 for d in diffs)
    tail = sum(math.comb(n, i) for i in range(0, min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the given order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def rank_methods(metric: str, scores: Mapping[str, Sequence[float]]) -> dict:
    """Methods best first by mean for one metric, with every pair's paired test (Holm-corrected)."""
    higher = METRICS[metric][1]
    means = {m: describe(v)["mean"] for m, v in scores.items()}
    order = sorted((m for m in scores if means[m] is not None), key=lambda m: means[m], reverse=higher)
    order += [m for m in scores if means[m] is None]
    pairs = [(a, b) for i, a in enumerate(order) for b in order[i + 1:]]
    tests = [paired_test(scores[a], scores[b]) for a, b in pairs]
    adjusted = holm([p for p, _, _ in tests]) if tests else []
    return {"better": "higher" if higher else "lower", "order": order, "test": test_name(), "alpha": ALPHA,
            "pairs": [{"better": a, "worse": b, "p": _round(p, 8), "p_holm": _round(q, 8), "n": n,
                       "significant": bool(q < ALPHA)}
                      for (a, b), (p, n, _), q in zip(pairs, tests, adjusted)]}


def summarize(values: Mapping[str, Mapping[str, Sequence[float]]]) -> dict:
    """values[method][metric] = per-image scores (same image order for every method) ->
    {"metrics": {method: {metric: {"mean", "ci95", "n"}}}, "ranking": {metric: ...}}."""
    metrics = {method: {metric: describe(v) for metric, v in per.items()} for method, per in values.items()}
    names = list(dict.fromkeys(metric for per in values.values() for metric in per))
    ranking = {metric: rank_methods(metric, {m: per[metric] for m, per in values.items() if metric in per})
               for metric in names}
    return {"metrics": metrics, "ranking": ranking}
