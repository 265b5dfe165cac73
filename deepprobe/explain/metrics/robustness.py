"""Robustness metrics of Quantus 0.6: does the map stay put when the photo barely changes?

`explainer(x, targets, seeds) -> (N,H,W)` recomputes maps (same method, layer and classes); each perturbed copy
of image i draws its noise from image i's own generator, so results do not depend on the batch.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .core import MetricScores, as_seeds, generators, prepare, to_cpu

Explainer = Callable[[torch.Tensor, torch.Tensor, Sequence[int]], torch.Tensor]


def _uniform_noise(shape, gen: torch.Generator, lower_bound: float, upper_bound: float | None, dtype):
    """Quantus's `uniform_noise`: U(-lower, lower) when there is no upper bound, else U(lower, upper)."""
    low, high = (-lower_bound, lower_bound) if upper_bound is None else (lower_bound, upper_bound)
    return torch.rand(shape, generator=gen, device=gen.device, dtype=dtype) * (high - low) + low


def max_sensitivity(explainer: Explainer, x: torch.Tensor, targets: torch.Tensor, *, nr_samples: int = 200,
                    lower_bound: float = 0.2, upper_bound: float | None = None, abs: bool = False,
                    normalise: bool = False, seeds: int | Sequence[int] = 0, batch_size: int = 32) -> MetricScores:
    """Max-sensitivity (Yeh et al. 2019; `quantus.MaxSensitivity`): the largest relative change of the map,
    max over `nr_samples` noisy copies of ||a(x + d) - a(x)||_F / ||a(x)||_F, with d uniform in
    [-lower_bound, lower_bound] on every pixel and channel (no clipping, as Quantus); lower is better.
    Computed by `captum.metrics.sensitivity_max` (same formula) with that noise and batched re-explanation."""
    from captum.metrics import sensitivity_max

    n = x.shape[0]
    seeds = as_seeds(seeds, n)
    gens = generators(seeds, x.device, stream=3)
    seed_tensor = torch.tensor(seeds, dtype=torch.long, device=x.device)

    def perturb(inputs: torch.Tensor, radius: float) -> torch.Tensor:  # rows are image-major: k copies per image
        k = inputs.shape[0] // n
        noise = torch.stack([_uniform_noise(inputs.shape[1:], gens[row // k], radius, upper_bound, inputs.dtype)
                             for row in range(inputs.shape[0])])
        return inputs + noise

    def explanation(inputs, target: torch.Tensor, additional_forward_args) -> tuple[torch.Tensor]:
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs  # captum passes (and wants back) tuples
        with torch.enable_grad():  # captum runs the metric under no_grad; gradient methods need it
            maps = explainer(inputs, target, additional_forward_args[0].tolist())
        return (prepare(maps, abs, normalise),)

    per_batch = min(max(batch_size, n), n * nr_samples)
    values = sensitivity_max(explanation, x, perturb_func=perturb, perturb_radius=lower_bound,
                             n_perturb_samples=nr_samples, max_examples_per_batch=per_batch, target=targets,
                             additional_forward_args=(seed_tensor,))
    return MetricScores(to_cpu(values))


def local_lipschitz(explainer: Explainer, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
                    nr_samples: int = 200, perturb_mean: float = 0.0, perturb_std: float = 0.1, abs: bool = False,
                    normalise: bool = True, seeds: int | Sequence[int] = 0, batch_size: int = 32) -> MetricScores:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018; `quantus.LocalLipschitzEstimate`): max over
    `nr_samples` copies x' = x + N(perturb_mean, perturb_std^2) of ||a(x) - a(x')||_2 / (||x - x'||_2 + 1e-10),
    maps prepared as Quantus does (normalised by their largest value); lower is better."""
    n = x.shape[0]
    seeds = as_seeds(seeds, n)
    gens = generators(seeds, x.device, stream=4)
    a = prepare(maps.to(x.device), abs, normalise).flatten(1)
    best = torch.full((n,), float("-inf"), dtype=torch.float64, device=x.device)
    for job in torch.arange(n * nr_samples).split(max(1, batch_size)):
        i = (job // nr_samples).tolist()
        noise = torch.stack([torch.randn(x.shape[1:], generator=gens[j], device=x.device) for j in i])
        noisy = x[i] + perturb_mean + perturb_std * noise
        with torch.enable_grad():
            again = prepare(explainer(noisy, targets[i], [seeds[j] for j in i]), abs, normalise).flatten(1)
        ratio = (a[i] - again).double().norm(dim=1) / ((x[i] - noisy).double().flatten(1).norm(dim=1) + 1e-10)
        best.scatter_reduce_(0, torch.tensor(i, device=x.device), ratio, reduce="amax")
    return MetricScores(to_cpu(best))
