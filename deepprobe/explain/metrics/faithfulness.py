"""Faithfulness metrics of Quantus 0.6, batched: does removing what the map calls important change the output?

Each function takes the network (float images in [0,1] -> logits), photos x (N,3,H,W), maps (N,H,W) and the
classes explained (N,), and returns `MetricScores`. Defaults are Quantus's (class and keyword names in each
docstring), except where the README's "departures from Quantus" says otherwise. A map of shape (H,W) is read as
Quantus reads an (N,1,H,W) attribution: broadcast over the colour channels, so each pixel is C features.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ...errors import DeepprobeError
from .core import (Jobs, MetricScores, Plan, as_seeds, baseline_fill, clean_jobs, generators, patch_ids, pearson,
                   prepare, ranks, run_plans, to_cpu, trapezoid_unit)
from .imputation import noisy_linear_imputation

ORDERS = ("morf", "lerf", "random")
ROAD_PERCENTAGES = tuple(range(1, 100, 2))  # Quantus ROAD: 1%, 3%, ..., 99% of the pixels


def _check_maps(x: torch.Tensor, maps: torch.Tensor) -> None:
    if maps.dim() != 3 or maps.shape[0] != x.shape[0] or tuple(maps.shape[-2:]) != tuple(x.shape[-2:]):
        raise DeepprobeError(f"maps must be (N,H,W) at the images' size {tuple(x.shape[-2:])}, got "
                             f"{tuple(maps.shape)}")


def flip_counts(c: int, h: int, w: int, features_in_step: int | None = None) -> list[int]:
    """Features flipped after each pixel-flipping step (the last may be partial). Default step: 1% of the pixels
    (all their channels), ~100 steps at any size; Quantus's default, 1 feature per step, costs 3*224*224 =
    150,528 forward passes for one photo."""
    features = c * h * w
    step = features_in_step or c * math.ceil(h * w / 100)
    if step < 1:
        raise DeepprobeError(f"features_in_step must be at least 1, got {step}")
    return [min(k * step, features) for k in range(1, math.ceil(features / step) + 1)]


def pixel_flipping(net: Callable, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
                   batch_size: int = 32, callback: Callable[[int], None] | None = None, **options) -> MetricScores:
    """Pixel-flipping (Bach et al. 2015; `quantus.PixelFlipping`): features are replaced by the baseline in
    order of decreasing attribution, `features_in_step` at a time (cumulative), and the target's softmax
    probability is read after each step. Value: area under that curve with unit spacing (Quantus's
    `return_auc_per_sample`); lower is better. Curve axis: fraction of features flipped. `options`: those of
    `pixel_flipping_plan`."""
    return run_plans(net, [pixel_flipping_plan(x, maps, targets, **options)], batch_size, x.device, callback)[0]


def pixel_flipping_plan(x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
                        features_in_step: int | None = None, perturb_baseline: str | float = "black",
                        abs: bool = False, normalise: bool = True, seeds: int | Sequence[int] = 0) -> Plan:
    """Pixel-flipping as work to run (`core.run_plans`)."""
    _check_maps(x, maps)
    n, c, h, w = x.shape
    features = c * h * w
    counts = torch.tensor(flip_counts(c, h, w, features_in_step), device=x.device)
    steps = len(counts)
    a = prepare(maps, abs, normalise).flatten(1)
    rank = ranks(a, as_seeds(seeds, n))  # (N,P) pixel order; channel k of pixel p is feature c*rank + k
    position = (rank[:, None, :] * c + torch.arange(c, device=x.device).view(1, c, 1)).view(n, c, h, w)
    fill = baseline_fill(x, perturb_baseline)

    def build(job: torch.Tensor):
        i, s = job // steps, job % steps
        flipped = position[i] < counts[s].view(-1, 1, 1, 1)
        return torch.where(flipped, fill[i], x[i]), targets[i]

    def finish(scores: list[torch.Tensor]) -> MetricScores:
        curve = scores[0].view(n, steps)
        return MetricScores(to_cpu(trapezoid_unit(curve)), to_cpu(curve),
                            [float(v) / features for v in counts.tolist()])
    return Plan([Jobs(n * steps, build, "probability")], finish)


def region_perturbation(net: Callable, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
                        batch_size: int = 32, callback: Callable[[int], None] | None = None,
                        **options) -> MetricScores:
    """Region perturbation (Samek et al. 2016; `quantus.RegionPerturbation`): non-overlapping patch_size^2
    patches, ordered by their summed attribution (`order` morf = most relevant first), are replaced by the
    baseline one more per step for `regions_evaluation` steps; the curve is f(x) - f(x_k) of the target's
    softmax probability (Quantus's output). Value: AOPC = sum_k (f(x) - f(x_k)) / (L + 1) over k = 0..L (Samek's
    area over the perturbation curve; k = 0 adds 0); higher is better for MoRF. `options`: those of
    `region_perturbation_plan`."""
    return run_plans(net, [region_perturbation_plan(x, maps, targets, **options)], batch_size, x.device,
                     callback)[0]


def region_perturbation_plan(x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *, patch_size: int = 8,
                             order: str = "morf", regions_evaluation: int = 100,
                             perturb_baseline: str | float = "black", abs: bool = False, normalise: bool = True,
                             seeds: int | Sequence[int] = 0) -> Plan:
    """Region perturbation as work to run (`core.run_plans`)."""
    _check_maps(x, maps)
    if order not in ORDERS:
        raise DeepprobeError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    n, _, h, w = x.shape
    seeds = as_seeds(seeds, n)
    ids, patches = patch_ids(h, w, patch_size, x.device)
    a = prepare(maps, abs, normalise).flatten(1)
    sums = torch.zeros(n, patches, device=x.device, dtype=torch.float64).index_add_(1, ids, a.double())
    if order == "random":
        patch_rank = ranks(torch.zeros_like(sums), seeds)
    else:
        patch_rank = ranks(sums, seeds, descending=order == "morf")
    pixel_rank = patch_rank[:, ids].view(n, 1, h, w)
    steps = min(regions_evaluation, patches)
    fill = baseline_fill(x, perturb_baseline)

    def build(job: torch.Tensor):
        i, s = job // steps, job % steps
        return torch.where(pixel_rank[i] <= s.view(-1, 1, 1, 1), fill[i], x[i]), targets[i]

    def finish(scores: list[torch.Tensor]) -> MetricScores:
        clean, perturbed = scores
        curve = clean[:, None] - perturbed.view(n, steps)
        aopc = curve.double().sum(1) / (steps + 1)
        return MetricScores(to_cpu(aopc), to_cpu(curve), list(range(1, steps + 1)))
    return Plan([clean_jobs(x, targets, "probability"), Jobs(n * steps, build, "probability")], finish)


def random_subsets(x: torch.Tensor, seeds: Sequence[int], runs: int, size: int) -> torch.Tensor:
    """(N, runs, size) feature indices, each row drawn without replacement from the C*H*W features."""
    features = x[0].numel()
    if not 0 < size < features:
        raise DeepprobeError(f"subset_size must be between 1 and {features - 1}, got {size}")
    return torch.stack([torch.rand(runs, features, generator=g, device=x.device).topk(size, dim=1).indices
                        for g in generators(seeds, x.device, stream=1)])


def faithfulness_correlation(net: Callable, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
                             batch_size: int = 32, callback: Callable[[int], None] | None = None,
                             **options) -> MetricScores:
    """Faithfulness correlation (Bhatt et al. 2020; `quantus.FaithfulnessCorrelation`): `nr_runs` times, a
    random subset of `subset_size` features is replaced by the baseline; value: Pearson correlation over the
    runs between the subset's summed attribution and the drop of the target's logit (Quantus reads logits here,
    softmax=False); higher is better. `subsets` (N, runs, size) replaces the random draw (tests use it).
    `options`: those of `faithfulness_correlation_plan`."""
    return run_plans(net, [faithfulness_correlation_plan(x, maps, targets, **options)], batch_size, x.device,
                     callback)[0]


def faithfulness_correlation_plan(x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *, nr_runs: int = 100,
                                  subset_size: int = 224, perturb_baseline: str | float = "black", abs: bool = False,
                                  normalise: bool = True, seeds: int | Sequence[int] = 0,
                                  subsets: torch.Tensor | None = None) -> Plan:
    """Faithfulness correlation as work to run (`core.run_plans`)."""
    _check_maps(x, maps)
    n, c, h, w = x.shape
    if subsets is None:
        subsets = random_subsets(x, as_seeds(seeds, n), nr_runs, subset_size)
    subsets = subsets.to(x.device)
    runs = subsets.shape[1]
    a = prepare(maps, abs, normalise).flatten(1)
    attribution = a.gather(1, (subsets % (h * w)).flatten(1)).view(n, runs, -1).double().sum(-1)
    fill = baseline_fill(x, perturb_baseline)

    def build(job: torch.Tensor):
        i, r = job // runs, job % runs
        chosen = torch.zeros(len(job), c * h * w, dtype=torch.bool, device=x.device)
        chosen.scatter_(1, subsets[i, r], True)
        return torch.where(chosen.view(-1, c, h, w), fill[i], x[i]), targets[i]

    def finish(scores: list[torch.Tensor]) -> MetricScores:
        clean, perturbed = scores
        return MetricScores(to_cpu(pearson(attribution, clean[:, None] - perturbed.view(n, runs))))
    return Plan([clean_jobs(x, targets, "logit"), Jobs(n * runs, build, "logit")], finish)


def road(net: Callable, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *, batch_size: int = 32,
         callback: Callable[[int], None] | None = None, **options) -> MetricScores:
    """ROAD, RemOve And Debias (Rong et al. 2022; `quantus.ROAD`): for each percentage p the int(H*W*p/100)
    most relevant pixels (MoRF; LeRF: least relevant) are removed by noisy linear imputation, and the curve
    records whether the model still predicts the target (1/0). Value: mean LeRF accuracy - mean MoRF accuracy
    (higher is better: removing the pixels the map calls important hurts more than removing the others); the
    MoRF and LeRF means and curves are kept. Quantus computes MoRF only (and fails on RGB images, see README).
    `options`: those of `road_plan`."""
    return run_plans(net, [road_plan(x, maps, targets, **options)], batch_size, x.device, callback)[0]


def road_plan(x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
              percentages: Sequence[float] = ROAD_PERCENTAGES, noise: float = 0.01, abs: bool = False,
              normalise: bool = True, seeds: int | Sequence[int] = 0, orders: Sequence[str] = ("morf", "lerf")) -> Plan:
    """ROAD as work to run (`core.run_plans`)."""
    _check_maps(x, maps)
    n, _, h, w = x.shape
    seeds = as_seeds(seeds, n)
    a = prepare(maps, abs, normalise).flatten(1)
    counts = torch.tensor([int(h * w * p / 100) for p in percentages], device=x.device)
    order_ranks = torch.stack([ranks(a, seeds, descending=o == "morf") for o in orders])  # (O,N,P)
    gens = generators(seeds, x.device, stream=2)
    per_image = len(orders) * len(counts)

    def build(job: torch.Tensor):
        i, rest = job // per_image, job % per_image
        o, k = rest // len(counts), rest % len(counts)
        removed = (order_ranks[o, i] < counts[k, None]).view(-1, h, w)
        return noisy_linear_imputation(x[i], removed, noise, [gens[j] for j in i.tolist()]), targets[i]

    def finish(scores: list[torch.Tensor]) -> MetricScores:
        correct = scores[0].view(n, len(orders), len(counts))
        curves = {o: to_cpu(correct[:, j]) for j, o in enumerate(orders)}
        means = {o: curve.mean(1) for o, curve in curves.items()}
        none = torch.zeros(n, dtype=torch.float64)
        value = means.get("lerf", none) - means.get("morf", none)
        return MetricScores(value, None, [float(p) for p in percentages], extra=means, curves=curves)
    return Plan([Jobs(n * per_image, build, "correct")], finish)


def infidelity(net: Callable, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *, batch_size: int = 32,
               callback: Callable[[int], None] | None = None, **options) -> MetricScores:
    """Infidelity (Yeh et al. 2019) as `quantus.Infidelity` computes it: patches of each size are replaced by
    the baseline one more per step in row-major order; at each step the drop of the target's logit is compared
    with the attribution-weighted change of the input, sum(a * (x - x_k)); value: mean squared difference over
    the steps, averaged over the patch sizes; lower is better. Quantus repeats this deterministic experiment
    `n_perturb_samples` (10) times and averages identical numbers; it is computed once here. `options`: those of
    `infidelity_plan`."""
    return run_plans(net, [infidelity_plan(x, maps, targets, **options)], batch_size, x.device, callback)[0]


def infidelity_plan(x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
                    perturb_patch_sizes: Sequence[int] = (4,), perturb_baseline: str | float = "black",
                    abs: bool = False, normalise: bool = False) -> Plan:
    """Infidelity as work to run (`core.run_plans`): the clean images, then each patch size's removals."""
    _check_maps(x, maps)
    n, c, h, w = x.shape
    a = prepare(maps, abs, normalise).flatten(1).double()
    fill = baseline_fill(x, perturb_baseline)
    expected, jobs = [], [clean_jobs(x, targets, "logit")]
    for size in perturb_patch_sizes:
        ids, patches = patch_ids(h, w, size, x.device)
        # sum(a * (x - x_k)) grows by each patch's attribution-weighted change as it is removed
        change = a * (x - fill).double().sum(1).flatten(1)
        per_patch = torch.zeros(n, patches, dtype=torch.float64, device=x.device).index_add_(1, ids, change)
        expected.append(per_patch.cumsum(1))

        def build(job: torch.Tensor, order=ids.view(1, 1, h, w), patches=patches):
            i, s = job // patches, job % patches
            return torch.where(order <= s.view(-1, 1, 1, 1), fill[i], x[i]), targets[i]
        jobs.append(Jobs(n * patches, build, "logit"))

    def finish(scores: list[torch.Tensor]) -> MetricScores:
        clean = scores[0].double()
        losses = [((clean[:, None] - got.view(n, -1).double()) - want).pow(2).mean(1)
                  for got, want in zip(scores[1:], expected)]
        return MetricScores(to_cpu(torch.stack(losses, 1).mean(1)))
    return Plan(jobs, finish)
