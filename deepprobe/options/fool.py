"""Defaults of `deepprobe fool` and of `deepprobe.attack` (one copy, shared by the CLI, the API and recipes)."""
from __future__ import annotations

from dataclasses import dataclass

METHODS = ("pgd", "fgsm", "szegedy", "cw")
DEFAULT_METHOD = "pgd"
# Detectors and segmenters (deepprobe.techniques.fool_tasks). dag: Xie et al. 2017, unbounded steps of
# 0.5/255 * grad / max|grad| until no target is left (at most 150 steps on detectors, 200 on segmenters, as in
# the paper); pgd: TOG-style signed steps inside an L-inf ball (Chow et al. 2020: 8/255, 2/255, 10 steps).
TASK_METHODS = ("dag", "pgd")
DEFAULT_TASK_METHOD = "dag"
DAG_STEP = 0.5 / 255
DAG_STEPS = {"detection": 150, "segmentation": 200}
TOG_EPS, TOG_ALPHA, TOG_STEPS = 8 / 255, 2 / 255, 10
# Segment Anything (vanish a prompt's mask) and depth (push a region nearer/farther): PGD inside TOG's budget, at
# most this many steps (both stop early once the goal holds with a margin)
FOUNDATION_STEPS = 100
DEFAULT_FACTOR = 2.0  # depth: --nearer/--farther by this factor
DEFAULT_STEPS = 40  # pgd: at most this many steps (it stops early); szegedy/cw: steps per round of the c search
NORMS = ("linf", "l2")

# Budgets used when --eps is not given: 8/255 is the usual ImageNet L-inf budget (invisible on photos);
# an L2 budget of 1.0 in [0,1] units over a 224x224x3 image is a comparable, equally invisible change.
DEFAULT_EPS = {"linf": 8 / 255, "l2": 1.0}
# Step sizes used when --lr is not given: L-BFGS takes unit steps (strong Wolfe line search), Carlini-Wagner
# uses Adam at 0.01 in tanh space (as in the paper).
DEFAULT_LR = {"szegedy": 1.0, "cw": 0.01}
# Probability of the target that a targeted attack goes on to reach on the saved 8-bit image (within its
# eps/steps budget), so the result is a confident "ostrich", not a 26% one. 0 keeps the smallest margin.
DEFAULT_CONFIDENCE = 0.9


@dataclass
class Options:
    # method/steps/lr stay None unless set, so `--from-noise` (options/noise.py) can apply its own defaults.
    method: str | None = None  # pgd | fgsm | szegedy | cw (None: DEFAULT_METHOD)
    norm: str = "linf"  # pgd/fgsm budget norm: linf | l2
    eps: float | None = None  # budget for pgd/fgsm (None: 8/255 for linf, 1.0 for l2)
    alpha: float | None = None  # pgd step size (None: eps/4, as torchattacks' 2/255 for 8/255)
    steps: int | None = None  # None: DEFAULT_STEPS
    lr: float | None = None  # szegedy (L-BFGS) / cw (Adam) step size; for pgd it stands in for --alpha
    kappa: float = 1.0  # logit margin past the runner-up to aim for, so rounding to 8 bits cannot undo it
    # targeted: the target probability to reach on the saved image (None: DEFAULT_CONFIDENCE; with --from-noise
    # the noise default, 0.99); 0: stop at the smallest margin `kappa`. Untargeted attacks ignore it.
    confidence: float | None = None
    rounds: int = 3  # pgd: extra rounds for images whose saved (8-bit) version is not yet fooled
    search_steps: int = 5  # szegedy/cw: rounds of the search over the constant c
    c: float | None = None  # szegedy/cw: first constant of the search (None: 0.1 for szegedy, 1.0 for cw)
    batch_size: int = 8  # images attacked together
    amplify: float | None = None  # panel: perturbation shown x this (None: scaled so the largest change is visible)
    min_score: float = 0.5  # detectors: a box counts as detected at or above this score
    factor: float = DEFAULT_FACTOR  # depth: how much nearer (or farther) the region should look


RANGES = {
    "eps": "(0, inf)", "alpha": "(0, inf)", "steps": "[1, inf)", "lr": "(0, inf)", "kappa": "[0, inf)",
    "rounds": "[0, inf)", "search_steps": "[1, inf)", "c": "(0, inf)", "batch_size": "[1, inf)", "amplify": "(0, inf)",
    "confidence": "[0, 1)", "min_score": "(0, 1]", "factor": "(1, inf)",
}


def related_ranges(values: dict) -> dict[str, tuple[str, str]]:
    """In L-inf, eps and the step are per-pixel changes in [0,1] units: more than 1 changes nothing more (an
    L2 budget grows with the image, so it has no upper bound)."""
    if values["norm"] != "linf":
        return {}
    return {"eps": ("(0, 1]", "for norm linf"), "alpha": ("(0, 1]", "for norm linf")}


def confidence_for(confidence: float | None) -> float:
    return DEFAULT_CONFIDENCE if confidence is None else float(confidence)


def eps_for(norm: str, eps: float | None) -> float:
    return DEFAULT_EPS[norm] if eps is None else float(eps)


def alpha_for(eps: float, alpha: float | None, lr: float | None) -> float:
    if alpha is not None:
        return float(alpha)
    return float(lr) if lr is not None else eps / 4


def lr_for(method: str, lr: float | None) -> float:
    return DEFAULT_LR.get(method, 1.0) if lr is None else float(lr)


def c_for(method: str, c: float | None) -> float:
    return {"szegedy": 0.1, "cw": 1.0}.get(method, 1.0) if c is None else float(c)
