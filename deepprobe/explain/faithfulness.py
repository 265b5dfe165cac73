"""Deletion and insertion curves (Petsiuk et al. 2018, RISE) and the baseline maps they are compared with.

A map orders the pixels, most important first. Deletion replaces them, in that order, by a fill (black in
RISE) and records the target class's softmax probability after each step: a faithful map makes it fall fast
(low area under the curve). Insertion lays the pixels, in the same order, over a canvas (a blurred copy in
RISE): a faithful map makes the probability rise fast (high area). Both are the same operation, "move each
pixel from image `start` to image `end` once its rank is below the step's count", so one batched loop runs
every curve of every map and photo: perturbed images are built chunk by chunk on the device from the pixel
ranks, never all at once.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..engine.transforms import gaussian_blur, luma
from ..errors import DeepprobeError
from ..options.evaluate import BLUR_SIGMA, EDGE_SIGMA, FILLS, RANDOM_CELL
from .metrics.core import Jobs, Plan, as_seeds, generators, ranks, run_jobs, run_plans


# ------------------------------------------------------------------------------------------ images and maps
def fill_image(x: torch.Tensor, fill: str, mean: Sequence[float] = (0.5, 0.5, 0.5)) -> torch.Tensor:
    """The image a deleted pixel is taken from (or inserted pixels are laid over): the normalization's mean colour
    (`mean`; what RISE's zeros are, as it zeroes normalized tensors), black, grey or a blurred copy."""
    if fill == "mean":
        return torch.tensor(list(mean), dtype=x.dtype, device=x.device).view(1, -1, 1, 1).expand_as(x).clone()
    if fill == "black":
        return torch.zeros_like(x)
    if fill == "grey":
        return torch.full_like(x, 0.5)
    if fill == "blur":
        return gaussian_blur(x, BLUR_SIGMA)
    raise DeepprobeError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")


def random_map(x: torch.Tensor, seed: int | Sequence[int] = 0, cell: int = RANDOM_CELL) -> torch.Tensor:
    """(N,H,W) uniform noise on a grid of `cell`-px cells, bilinearly upsampled (cell 1: per pixel), from seeded
    CPU generators (one per image: `seed` + i, or a seed per image) so it is the same on every device."""
    n, _, h, w = x.shape
    noise = torch.stack([torch.rand(1, max(1, round(h / cell)), max(1, round(w / cell)), generator=g)
                         for g in generators(as_seeds(seed, n), "cpu", stream=6)])
    if cell > 1:
        noise = F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)
    return noise[:, 0].to(x.device)


def edge_map(x: torch.Tensor, sigma: float = EDGE_SIGMA) -> torch.Tensor:
    """(N,H,W) Sobel gradient magnitude of the grey image, blurred: a map that knows edges but not the class."""
    grey = luma(x.float())
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    kernels = torch.stack([sobel, sobel.T])[:, None]  # (2,1,3,3): d/dx, d/dy
    grad = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = grad.pow(2).sum(1, keepdim=True).sqrt()
    return gaussian_blur(magnitude, sigma)[:, 0]


# ------------------------------------------------------------------------------------------ ranks and curves
def pixel_ranks(maps: torch.Tensor, seed: int | Sequence[int] = 0) -> torch.Tensor:
    """(N,H,W) maps -> (N,H*W) int32 rank of each pixel, 0 = highest value; ties broken at random, seeded per
    image (see `metrics.core.ranks` for why)."""
    return ranks(maps.flatten(1).float(), as_seeds(seed, maps.shape[0])).int()


def step_counts(pixels: int, steps: int) -> torch.Tensor:
    """Pixels moved after each of steps+1 points (0 .. all), as evenly as whole pixels allow."""
    if steps < 1:
        raise DeepprobeError(f"--steps must be at least 1, got {steps}")
    return torch.round(torch.linspace(0, pixels, steps + 1, dtype=torch.float64)).long()


def perturbation_curves(net: Callable[[torch.Tensor], torch.Tensor], bank: torch.Tensor, ranks: torch.Tensor,
                        curves: Sequence[tuple[int, int, int]], targets: torch.Tensor, steps: int,
                        batch_size: int = 32, callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Target probability as pixels move from one image to another in rank order: (C,N,steps+1).

    bank: (B,N,3,H,W) the images curves start and end at (photo, fills); ranks: (R,N,H*W) from `pixel_ranks`;
    curves: C triples (start, end, rank) indexing bank, bank and ranks; targets: (N,). Curve c of image i at
    step s uses where(rank < count[s], end, start). All C*N*(steps+1) images run in chunks of `batch_size`
    built on the fly (nothing is stored per step); `callback(k)` hears after each chunk how many images it held.
    """
    jobs = curve_jobs(bank, ranks, curves, targets, steps)
    return run_jobs(net, [jobs], batch_size, bank.device, callback)[0].view(len(curves), bank.shape[1], steps + 1)


def curve_jobs(bank: torch.Tensor, ranks: torch.Tensor, curves: Sequence[tuple[int, int, int]],
               targets: torch.Tensor, steps: int) -> Jobs:
    """The C*N*(steps+1) images of `perturbation_curves` as Jobs (curve-major, then image, then step)."""
    _, n, _, h, w = bank.shape
    counts = step_counts(h * w, steps).to(ranks.device)
    table = torch.tensor(list(curves), device=bank.device).view(-1, 3)
    per_curve = steps + 1

    def build(job: torch.Tensor):
        ci, rest = job // (n * per_curve), job % (n * per_curve)
        ii, si = rest // per_curve, rest % per_curve
        start, end, rank = table[ci].unbind(1)
        moved = (ranks[rank, ii] < counts[si, None]).view(-1, 1, h, w)
        return torch.where(moved, bank[end, ii], bank[start, ii]), targets[ii]
    return Jobs(len(table) * n * per_curve, build, "probability")


def fractions(pixels: int, steps: int) -> torch.Tensor:
    """The x axis of the curves: fraction of the pixels moved at each point, from 0 to 1."""
    return step_counts(pixels, steps).double() / pixels


def auc(curves: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Area under each curve (last dim) by the trapezoid rule over the fractions `x` in [0,1]."""
    return torch.trapezoid(curves.double(), x.to(curves.device).double(), dim=-1).float()


def deletion_insertion(net, x: torch.Tensor, maps: Sequence[torch.Tensor], targets: torch.Tensor, steps: int,
                       deletion_fill: str = "mean", insertion_fill: str = "blur", batch_size: int = 32,
                       seed: int | Sequence[int] = 0, mean: Sequence[float] = (0.5, 0.5, 0.5),
                       callback: Callable[[int], None] | None = None, deletion: bool = True, insertion: bool = True
                       ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Deletion and insertion curves of several (N,H,W) maps of the same photos x (N,3,H,W); `seed`: one per
    image (or a first seed) for the random tie-breaking.

    Returns (deletion, insertion), each (len(maps), N, steps+1) target probabilities (None when not asked for);
    one batched loop runs both.
    """
    plan = deletion_insertion_plan(x, maps, targets, steps, deletion_fill, insertion_fill, seed, mean, deletion,
                                   insertion)
    return run_plans(net, [plan], batch_size, x.device, callback)[0]


def deletion_insertion_plan(x: torch.Tensor, maps: Sequence[torch.Tensor], targets: torch.Tensor, steps: int,
                            deletion_fill: str = "mean", insertion_fill: str = "blur", seed: int | Sequence[int] = 0,
                            mean: Sequence[float] = (0.5, 0.5, 0.5), deletion: bool = True,
                            insertion: bool = True) -> Plan:
    """`deletion_insertion` as work to run (`metrics.core.run_plans`); finish gives (deletion, insertion)."""
    m = len(maps)
    seeds = as_seeds(seed, x.shape[0])
    ranks_ = torch.stack([pixel_ranks(mp, seeds) for mp in maps])  # (M,N,P)
    bank = torch.stack([x, fill_image(x, deletion_fill, mean), fill_image(x, insertion_fill, mean)])  # photo, deleted, canvas
    curves = ([(0, 1, r) for r in range(m)] if deletion else []) + ([(2, 0, r) for r in range(m)] if insertion else [])

    def finish(scores: list[torch.Tensor]):
        out = scores[0].view(len(curves), x.shape[0], steps + 1)
        return (out[:m] if deletion else None), (out[-m:] if insertion else None)
    return Plan([curve_jobs(bank, ranks_, curves, targets.to(x.device), steps)], finish)
