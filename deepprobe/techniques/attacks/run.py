"""The frame every stand-alone attack function runs in: inputs rounded to 8 bits, a checker, eval mode."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...models import ModelBundle
from ..fool import eval_mode
from .check import Checker
from .common import Adversarial, Seeds, prepare

# body(checker, keys) -> (N,) cost: attacks the images the checker has not counted as broken yet.
Body = Callable[[Checker, torch.Tensor], torch.Tensor]


def run_attack(bundle: ModelBundle, x: torch.Tensor, y, eps: float, norm: str, seeds: Seeds, body: Body) -> Adversarial:
    """Round x to the 8-bit grid, count images misclassified as they are (cost 0), attack the rest."""
    x, labels, keys = prepare(bundle, x, y, eps, norm, seeds)
    checker = Checker(bundle, x, labels, eps, norm)
    cost = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    with eval_mode(bundle.net), torch.no_grad():
        checker.count_clean()
        if eps > 0 and not bool(checker.success.all()):
            cost = body(checker, keys)
    return Adversarial(checker.images, checker.success, cost, checker.predicted)
