"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks"): APGD-CE, APGD-DLR and the targeted APGD-T, L-inf and L2.

As in the paper and fra31/auto-attack: step size 2*eps, momentum 0.75, checkpoints after 22% of the
iterations and then ever closer (down 3% each time, at least 6%); at a checkpoint an image's step size
halves when fewer than 75% of the steps since the last one improved its loss, or when its best loss did not
improve and its step was not cut last time (never at the first checkpoint), and its search restarts from its
best point. APGD-T runs the
targeted DLR loss towards each of the `targets` runner-up classes in turn, on the images still robust.

What differs from the reference, without changing which images break: an image leaves the batch as soon as
an iterate's 8-bit version counts as adversarial (check.Checker); images that are not fooled as 8-bit
images keep going. Randomness is per image (rng.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import DeepprobeError
from ...models import ModelBundle
from ...options.attacks import AttackSettings
from .check import Checker
from .common import (Active, Adversarial, Seeds, StepProgress, _view, loss_and_grad, margin, objective,
                     over_targets, project, random_start, steepest)
from .common import repeat_runs
from .run import run_attack

FIRST_CHECKPOINT = 0.22  # fraction of the iterations before the first checkpoint
MIN_CHECKPOINT = 0.06  # shortest interval between checkpoints (fraction of the iterations)
CHECKPOINT_DECREASE = 0.03  # each interval is this much shorter than the last
RHO = 0.75  # a step size halves when at most this fraction of the steps since the last checkpoint improved
MOMENTUM = 0.75
STEP_FACTOR = 2.0  # first step size = STEP_FACTOR * eps


def apgd(bundle: ModelBundle, x: torch.Tensor, y, eps: float, *, norm: str = "linf", steps: int = 100,
         restarts: int = 1, loss: str = "ce", target: torch.Tensor | None = None, seeds: Seeds = None,
         progress: StepProgress | None = None) -> Adversarial:
    """APGD on `x` (N,3,H,W in [0,1], rounded to 8 bits first) with true classes `y`.

    loss "ce" or "dlr"; `target` (N,) classes turns it into targeted DLR towards them. Success is always
    "misclassified" (not "classified as the target"), judged on the 8-bit image by a fresh forward pass.
    `seeds`: one int per image (an image's result never depends on its batch), an int s (image i uses
    s + i) or None. Images misclassified already count as broken at cost 0.
    """
    AttackSettings(norm=norm, steps=steps, restarts=restarts)  # checks the values (one clear error)
    if loss not in ("ce", "dlr"):
        raise DeepprobeError(f"unknown loss {loss!r} (choose from ce, dlr)")

    def body(checker: Checker, keys: torch.Tensor) -> torch.Tensor:
        goal_target = None if target is None else torch.as_tensor(target, device=checker.x.device).long().flatten()
        return _restarts(bundle, checker, keys, steps=steps, restarts=restarts, loss=loss, target=goal_target,
                         progress=progress)
    return run_attack(bundle, x, y, eps, norm, seeds, body)


def apgd_targeted(bundle: ModelBundle, x: torch.Tensor, y, eps: float, *, norm: str = "linf", steps: int = 100,
                  restarts: int = 1, targets: int = 9, seeds: Seeds = None,
                  progress: StepProgress | None = None) -> Adversarial:
    """APGD-T: targeted DLR towards the 2nd, 3rd, ... (targets+1)-th most likely clean class, one run per
    target on the images still robust. Arguments as `apgd`."""
    AttackSettings(norm=norm, steps=steps, restarts=restarts, targets=targets)  # checks the values
    return run_attack(bundle, x, y, eps, norm, seeds,
                      lambda checker, keys: targeted(bundle, checker, keys, steps=steps, restarts=restarts,
                                                     targets=targets, progress=progress))


# ----- the loops the cascade calls (images already on the grid, checker set up) ------------------------------
def untargeted(loss: str):
    """Cascade entry for apgd-ce / apgd-dlr."""
    def body(bundle, checker, keys, settings, progress):
        return _restarts(bundle, checker, keys, steps=settings.steps, restarts=settings.restarts, loss=loss,
                         target=None, progress=progress)
    return body


def targeted(bundle: ModelBundle, checker: Checker, keys: torch.Tensor, *, steps: int, restarts: int, targets: int,
             progress: StepProgress | None) -> torch.Tensor:
    """APGD-T over the runner-up classes of each clean image; returns the steps spent per image."""
    return over_targets(bundle, checker, keys, targets, restarts * steps, progress,
                        lambda target, k, report: _restarts(bundle, checker, k, steps=steps, restarts=restarts,
                                                            loss="dlr", target=target, progress=report))


def _restarts(bundle, checker: Checker, keys, *, steps, restarts, loss, target, progress) -> torch.Tensor:
    return repeat_runs(checker, keys, restarts, steps, progress,
                       lambda todo, k, _r, report: _run(bundle, checker, todo, k, steps=steps, loss=loss,
                                                        target=None if target is None else target[todo],
                                                        progress=report))


@dataclass
class _State(Active):
    x0: torch.Tensor  # clean images
    y: torch.Tensor
    target: torch.Tensor | None
    x_adv: torch.Tensor  # current iterate
    x_old: torch.Tensor  # previous iterate (momentum)
    grad: torch.Tensor
    x_best: torch.Tensor  # lowest loss so far, and its gradient
    grad_best: torch.Tensor
    loss_best: torch.Tensor
    loss_prev: torch.Tensor
    step: torch.Tensor  # (M,) step size
    improved: torch.Tensor  # (M,) steps since the last checkpoint that lowered the loss
    best_at_check: torch.Tensor  # loss_best at the last checkpoint
    reduced: torch.Tensor  # (M,) bool: step size cut at the last checkpoint


def _run(bundle, checker: Checker, index: torch.Tensor, keys: torch.Tensor, *, steps: int, loss: str,
         target: torch.Tensor | None, progress: StepProgress | None) -> torch.Tensor:
    """One APGD run from a random start on the images `index` of the checker; returns steps spent on each."""
    eps, norm = checker.eps, checker.norm
    x0, y = checker.x[index], checker.labels[index]
    cost = torch.zeros(index.shape[0], dtype=torch.long, device=x0.device)
    x_adv = random_start(keys, x0, eps, norm)
    goal = _goal(loss, y, target)
    loss_value, logits, grad = loss_and_grad(bundle, x_adv, goal, checker.group)
    cost += 1
    s = _State(index=torch.arange(index.shape[0], device=x0.device), x0=x0, y=y, target=target, x_adv=x_adv,
               x_old=x_adv, grad=grad, x_best=x_adv, grad_best=grad, loss_best=loss_value, loss_prev=loss_value,
               step=torch.full((index.shape[0],), STEP_FACTOR * eps, device=x0.device),
               improved=torch.zeros(index.shape[0], device=x0.device), best_at_check=loss_value,
               reduced=torch.ones(index.shape[0], dtype=torch.bool, device=x0.device))  # as the reference:
    # the first checkpoint cuts a step only for oscillation (there is no earlier cut to have helped)
    s.hand_over(checker, index, logits.argmax(1) != s.y, x_adv, margin(logits, s.y))
    interval = max(int(FIRST_CHECKPOINT * steps), 1)
    shortest, decrease = max(int(MIN_CHECKPOINT * steps), 1), max(int(CHECKPOINT_DECREASE * steps), 1)
    since = 0
    for i in range(steps):
        if len(s) == 0:
            break
        a = 1.0 if i == 0 else MOMENTUM
        z = project(s.x_adv - _view(s.step) * steepest(s.grad, norm), s.x0, eps, norm)  # descend the loss
        new = project(s.x_adv + (z - s.x_adv) * a + (s.x_adv - s.x_old) * (1 - a), s.x0, eps, norm)
        s.x_old, s.x_adv = s.x_adv, new
        loss_value, logits, s.grad = loss_and_grad(bundle, new, _goal(loss, s.y, s.target), checker.group)
        cost[s.index] += 1
        s.improved += (loss_value < s.loss_prev).float()
        s.loss_prev = loss_value
        better = loss_value < s.loss_best
        s.x_best = torch.where(_view(better), new, s.x_best)
        s.grad_best = torch.where(_view(better), s.grad, s.grad_best)
        s.loss_best = torch.where(better, loss_value, s.loss_best)
        since += 1
        if since == interval:
            oscillating = s.improved <= interval * RHO
            stalled = ~s.reduced & (s.best_at_check <= s.loss_best)
            cut = oscillating | stalled
            s.step = torch.where(cut, s.step / 2, s.step)
            s.x_adv = torch.where(_view(cut), s.x_best, s.x_adv)
            s.grad = torch.where(_view(cut), s.grad_best, s.grad)
            s.reduced, s.best_at_check = cut, s.loss_best
            s.improved = torch.zeros_like(s.improved)
            since, interval = 0, max(interval - decrease, shortest)
        s.hand_over(checker, index, logits.argmax(1) != s.y, new, margin(logits, s.y))
        if progress is not None:
            progress(i + 1, steps)
    return cost


def _goal(loss: str, y: torch.Tensor, target: torch.Tensor | None):
    """The objective of rows `rows` (a slice) of the images attacked (loss_and_grad calls it per group)."""
    return lambda rows: objective(loss, y[rows], None if target is None else target[rows])
