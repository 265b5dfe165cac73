"""What every explanation metric shares: per-image random generators, Quantus's map preparation and perturbation
baselines, ranks with seeded tie-breaking, and one chunked loop that scores perturbed images on the device.

Quantus runs each metric as a Python loop over perturbation steps on NumPy copies of the whole batch, one forward
pass per step. Here a metric only says how to build perturbed image number j (image i, step s) from index tensors
(`Jobs`), and what to make of the scores (`Plan`); `run_plans` builds the images of every plan chunk by chunk on the
model's device and sends full batches through the network: several metrics and maps share forward passes, so the
cost is (perturbed images of them all / batch size) passes, every one full but the last, and memory stays flat
whatever the number of steps.
Randomness comes from one generator per image seeded from the image's own seed, so a score never depends on which
other images shared its batch (data-set runs resume and shard without changing a number).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ...device import fast_layout
from ...errors import DeepprobeError

BASELINES = ("black", "white", "mean")  # Quantus's perturb_baseline names that hold one value per image
SCORES = ("probability", "logit", "correct")


@dataclass
class MetricScores:
    """One metric's result on a batch: a number per image, and its curve where the metric has one."""

    values: torch.Tensor  # (N,) float64 on the CPU; nan where the metric is undefined (e.g. an empty mask)
    curve: torch.Tensor | None = None  # (N, S) per-image curve
    axis: list | None = None  # the curve's x values (fractions, steps, percentages or layer names)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # further per-image numbers, e.g. road's morf
    curves: dict[str, torch.Tensor] = field(default_factory=dict)  # further named curves, e.g. road morf/lerf


# ------------------------------------------------------------------------------------------ randomness
def as_seeds(seeds: int | Sequence[int], n: int) -> list[int]:
    """One seed per image: a sequence is taken as it is; an int s gives image i the data runner's
    `item_seed(s, i)`, so photos in a tensor draw what the same images draw in a DATA run."""
    if isinstance(seeds, int):
        from ...data.runner import item_seed

        return [item_seed(seeds, i) for i in range(n)]
    seeds = [int(s) for s in seeds]
    if len(seeds) != n:
        raise DeepprobeError(f"got {len(seeds)} seeds for {n} images")
    return seeds


def generators(seeds: Sequence[int], device: torch.device | str, stream: int = 0) -> list[torch.Generator]:
    """A generator on `device` per image (CUDA draws stay on the GPU; the same seed repeats on the same device).
    `stream` gives independent draws for different purposes (tie-breaking, noise, subsets) from one seed."""
    return [torch.Generator(device=device).manual_seed((int(s) + stream * 0x9E3779B97F4A7C15) % (2 ** 63))
            for s in seeds]


# ------------------------------------------------------------------------------------------ maps and baselines
def prepare(maps: torch.Tensor, abs_: bool, normalise: bool) -> torch.Tensor:
    """Quantus's preparation of attributions: `normalise_by_max` (divide by the largest |value|), then `abs`.

    Per image: Quantus divides by the largest value of the whole batch it is handed, so a score would depend on
    which images share a batch; for the scale-free metrics the two agree, and deepprobe's own maps are already
    scaled to a maximum of 1 per image (see README, "departures from Quantus")."""
    a = maps.detach().float()
    if normalise:
        peak = a.flatten(1).abs().amax(1).view(-1, *([1] * (a.dim() - 1)))
        a = torch.where(peak > 0, a / torch.where(peak > 0, peak, torch.ones_like(peak)), a)
    return a.abs() if abs_ else a


def baseline_fill(x: torch.Tensor, baseline: str | float) -> torch.Tensor:
    """(N,1,1,1) value a perturbed feature takes, as Quantus's batched `get_baseline_value`: black = the image's
    smallest value over all channels and pixels, white = its largest, mean = its mean; a number is used as is."""
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full((x.shape[0], 1, 1, 1), float(baseline), dtype=x.dtype, device=x.device)
    flat = x.flatten(1)
    if baseline == "black":
        value = flat.amin(1)
    elif baseline == "white":
        value = flat.amax(1)
    elif baseline == "mean":
        value = flat.mean(1)
    else:
        raise DeepprobeError(f"unknown perturbation baseline {baseline!r}; choose one of {', '.join(BASELINES)} "
                             f"or a number")
    return value.view(-1, 1, 1, 1)


# ------------------------------------------------------------------------------------------ ranks
def ranks(values: torch.Tensor, seeds: Sequence[int], descending: bool = True) -> torch.Tensor:
    """(N,P) values -> (N,P) int64 rank of each entry (0 = first: the largest when `descending`).

    Ties are broken at random, seeded per image. Why: a CAM is exactly zero on much of the photo, and a stable
    sort would then take those pixels top row first, a scan order that has nothing to do with the map. (Quantus
    takes NumPy's argsort order, which is unspecified for ties; on maps without ties the two orders agree.)
    """
    n, p = values.shape
    perm = torch.stack([torch.randperm(p, generator=g, device=g.device) for g in generators(seeds, values.device)])
    shuffled = values.gather(1, perm)
    order = perm.gather(1, shuffled.argsort(dim=1, descending=descending, stable=True))
    positions = torch.arange(p, device=values.device).expand(n, p)
    return torch.empty(n, p, dtype=torch.long, device=values.device).scatter_(1, order, positions)


def patch_ids(h: int, w: int, patch: int, device) -> tuple[torch.Tensor, int]:
    """(H*W,) index of the patch each pixel falls in, row-major over the grid Quantus uses (the image padded to
    a multiple of `patch`, half the padding before, half after), and the number of patches."""
    def split(dim: int) -> tuple[int, int]:  # quantus.helpers.utils.get_padding_size
        rest = dim % patch
        return (0, 0) if rest == 0 else ((patch - rest) // 2, patch - rest - (patch - rest) // 2)

    (top, bottom), (left, right) = split(h), split(w)
    rows = (torch.arange(h, device=device) + top) // patch
    cols = (torch.arange(w, device=device) + left) // patch
    per_row = (w + left + right) // patch
    ids = (rows[:, None] * per_row + cols[None, :]).flatten()
    return ids, ((h + top + bottom) // patch) * per_row


# ------------------------------------------------------------------------------------------ the loop
def pick(logits: torch.Tensor, targets: torch.Tensor, score: str) -> torch.Tensor:
    """The number a metric reads from the model: the target's softmax probability, its logit, or 1.0 when the
    top class is the target."""
    logits = logits.float()
    if score == "probability":
        return torch.softmax(logits, 1).gather(1, targets.view(-1, 1))[:, 0]
    if score == "logit":
        return logits.gather(1, targets.view(-1, 1))[:, 0]
    if score == "correct":
        return (logits.argmax(1) == targets).float()
    raise ValueError(f"unknown score {score!r}; one of {SCORES}")


Build = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Jobs:
    """`total` images a metric wants scored: `build(j)` turns a tensor of job indices (in [0, total), on the device)
    into (images, targets); `score` is what is read from the model for them (one of SCORES)."""

    total: int
    build: Build
    score: str


@dataclass
class Plan:
    """A metric on one batch as work: the images to score (`jobs`) and `finish(scores)`, which turns one (total,)
    tensor of scores per Jobs into the metric's result."""

    jobs: list[Jobs]
    finish: Callable[[list[torch.Tensor]], MetricScores]


def clean_jobs(x: torch.Tensor, targets: torch.Tensor, score: str) -> Jobs:
    """The unperturbed images themselves."""
    return Jobs(x.shape[0], lambda j: (x[j], targets[j]), score)


@torch.no_grad()
def run_jobs(net: Callable[[torch.Tensor], torch.Tensor], jobs: Sequence[Jobs], batch_size: int = 32,
             device: torch.device | str = "cpu", callback: Callable[[int], None] | None = None) -> list[torch.Tensor]:
    """Scores of every Jobs, (total,) each: the jobs of all of them, end to end, are built and run `batch_size` at
    a time (a pass may hold images of several metrics), each chunk dropped before the next."""
    out = [torch.empty(j.total, device=device) for j in jobs]
    starts = [0]
    for j in jobs:
        starts.append(starts[-1] + j.total)
    for chunk in torch.arange(starts[-1]).split(max(1, batch_size)):
        lo, hi = int(chunk[0]), int(chunk[-1]) + 1
        pieces = []
        for k, j in enumerate(jobs):
            a, b = max(lo, starts[k]), min(hi, starts[k + 1])
            if a < b:
                local = torch.arange(a - starts[k], b - starts[k], device=device)
                pieces.append((k, local, *j.build(local)))
        logits = net(fast_layout(torch.cat([images for _, _, images, _ in pieces])))
        at = 0
        for k, local, images, targets in pieces:
            out[k][local] = pick(logits[at:at + len(local)], targets, jobs[k].score)
            at += len(local)
        if callback is not None:
            callback(hi - lo)
    return out


def run_plans(net, plans: Sequence[Plan], batch_size: int = 32, device: torch.device | str = "cpu",
              callback: Callable[[int], None] | None = None) -> list[MetricScores]:
    """Every plan's result, their images sent through the network together (`run_jobs`)."""
    scores = run_jobs(net, [j for plan in plans for j in plan.jobs], batch_size, device, callback)
    out, at = [], 0
    for plan in plans:
        out.append(plan.finish(scores[at:at + len(plan.jobs)]))
        at += len(plan.jobs)
    return out


def forward_scores(net: Callable[[torch.Tensor], torch.Tensor], total: int, build: Build, score: str,
                   batch_size: int = 32, device: torch.device | str = "cpu",
                   callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Scores of `total` perturbed images (one Jobs alone), (total,)."""
    return run_jobs(net, [Jobs(total, build, score)], batch_size, device, callback)[0]


def trapezoid_unit(curve: torch.Tensor) -> torch.Tensor:
    """Area under each curve with unit spacing (`np.trapz(curve, dx=1)`, Quantus's `calculate_auc`)."""
    if curve.shape[-1] < 2:
        return torch.zeros(curve.shape[:-1], dtype=torch.float64, device=curve.device)
    return torch.trapezoid(curve.double(), dx=1.0, dim=-1)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation (N,R) x (N,R) -> (N,) in float64, nan for a constant row (as scipy)."""
    a, b = a.double(), b.double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    denom = (a.pow(2).sum(1) * b.pow(2).sum(1)).sqrt()
    corr = (a * b).sum(1) / denom
    return torch.where(denom > 0, corr.clamp(-1.0, 1.0), torch.full_like(corr, float("nan")))


def to_cpu(values: torch.Tensor) -> torch.Tensor:
    return values.detach().double().cpu()
