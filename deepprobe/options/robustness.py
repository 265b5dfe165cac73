"""Defaults of `deepprobe robustness` and of `deepprobe.robustness` (one copy, shared by the CLI, the API and recipes).

The attack settings default to AutoAttack's "standard" version (options/attacks.py holds them). The budget
defaults to RobustBench's ImageNet threat model, L-inf 4/255; for L2 it is 1.0 in [0,1] units over a 224 px
image, the budget `deepprobe fool` uses as equally invisible.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..distributed import DEFAULT_RANK_TIMEOUT
from .attacks import DEFAULT_CASCADE, AttackSettings

DEFAULT_EPS = {"linf": 4 / 255, "l2": 1.0}
_STANDARD = AttackSettings()


@dataclass
class Options:
    attack: list[str] = field(default_factory=lambda: list(DEFAULT_CASCADE))  # attacks/cascades, run in order
    eps: list[float] = field(default_factory=list)  # budgets (empty: DEFAULT_EPS of the norm); 0 = clean check
    norm: str = _STANDARD.norm  # linf | l2
    steps: int = _STANDARD.steps  # iterations of each gradient attack
    restarts: int = _STANDARD.restarts  # random restarts, for images still robust
    targets: int = _STANDARD.targets  # target classes of apgd-t / fab-t
    queries: int = _STANDARD.queries  # square: queries per image
    batch_size: int = 32  # images per forward pass of the attacks (and per line of results on disk)
    pool: int | None = None  # batches attacked together, survivors regrouped into full batches: the unit of
    # resuming (None: auto_pool, by the image size)
    save_examples: int = 3  # panels of images the attacks broke
    limit: int | None = None  # the first N images (after --sample)
    sample: int | None = None  # a fixed random subset of N images (chosen with --seed)
    workers: int = 2  # DataLoader processes reading images ahead (0: read in the main process)
    rank_timeout: float = DEFAULT_RANK_TIMEOUT  # torchrun: seconds without progress from a rank before the run ends


RANGES = {"eps": "[0, inf)", "steps": "[1, inf)", "restarts": "[1, inf)", "targets": "[1, inf)",
          "queries": "[1, inf)", "batch_size": "[1, inf)", "pool": "[1, inf)", "save_examples": "[0, inf)", "limit": "[1, inf)",
          "sample": "[1, inf)", "workers": "[0, inf)",
          "rank_timeout": "(0, inf)"}


POOL_IMAGES_224 = 256  # images of 224 x 224 px a pool holds by default (8 batches of 32)
MAX_AUTO_POOL = 16


def auto_pool(image_size: tuple[int, int] | None, batch_size: int) -> int:
    """The default --pool: as many batches as hold the pixels of 256 images of 224 x 224 px, at most 16.

    Why by size: every image of a pool keeps its attack state (APGD's iterates, gradients and best points) while
    the pool is attacked, about 16 MB per 224 px image (Lite0 on a CPU peaked at 7 GB with pools of 8 x 32 images,
    11 GB with 16 x 32). Small images cost little, and a larger pool keeps the passes of the later attacks full:
    on the robust 32 px CNN, 8 batches left FAB-T's and Square's passes 0.84-0.85 full, 16 batches 0.96-0.97.
    So 32-64 px images (CIFAR, MNIST) get 16 batches, 224 px 8, 384 px 2; an unknown size gets 8.
    """
    if image_size is None:
        return 8
    h, w = image_size
    images = POOL_IMAGES_224 * 224 * 224 // max(1, h * w)
    return max(1, min(MAX_AUTO_POOL, images // max(1, batch_size)))


def related_ranges(values: dict) -> dict[str, tuple[str, str]]:
    """An L-inf budget is a per-pixel change in [0,1] units: more than 1 is the whole pixel range (0 measures
    clean accuracy)."""
    return {"eps": ("[0, 1]", "for norm linf")} if values.get("norm") == "linf" else {}


def eps_for(norm: str, eps: list[float] | tuple[float, ...] | float | None) -> list[float]:
    """The budgets to measure, ascending without repeats (the norm's default when none are given)."""
    if eps is None or (isinstance(eps, (list, tuple)) and not eps):
        return [DEFAULT_EPS.get(norm, DEFAULT_EPS["linf"])]
    values = [float(e) for e in (eps if isinstance(eps, (list, tuple)) else [eps])]
    return sorted(set(values))
