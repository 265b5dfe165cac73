"""Robust accuracy of one batch: a cascade of attacks over a list of budgets, worst case per image.

As AutoAttack: each attack runs only on the images every earlier attack failed on, and an image is robust
at an eps when no attack broke it there. Budgets run in ascending order and an image broken at a smaller
eps is broken at every larger one (its example lies in the larger ball too), so it is not attacked again.
eps 0 means no attack. Images misclassified clean are non-robust everywhere (broken_by "clean").
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from ...errors import DeepprobeError
from ...forwards import ForwardCount
from ...models import ModelBundle
from ...options.attacks import DEFAULT_CASCADE, AttackSettings, eps_key, expand_cascade, stage_names
from .. import fool
from . import rng
from .apgd import targeted as apgd_targeted_body, untargeted as apgd_untargeted
from .fab import targeted as fab_targeted_body
from .square import search as square_search
from .check import Checker, norms
from .common import Adversarial, Seeds, StepProgress, groups, logits, prepare
from .run import run_attack

# body(bundle, checker, keys, settings, progress) -> (N,) cost; attacks the images the checker has not counted.
Body = Callable[[ModelBundle, Checker, torch.Tensor, AttackSettings, StepProgress | None], torch.Tensor]


@dataclass(frozen=True)
class Attack:
    """One named attack of a cascade; call it to run it alone on a batch."""

    name: str
    body: Body
    unit: str  # what `cost` counts: "steps" (gradient evaluations) or "queries" (forward passes)

    def __call__(self, bundle: ModelBundle, x: torch.Tensor, y, eps: float, settings: AttackSettings | None = None,
                 seeds: Seeds = None, progress: StepProgress | None = None) -> Adversarial:
        settings = settings or AttackSettings()
        return run_attack(bundle, x, y, eps, settings.norm, seeds,
                          lambda checker, keys: self.body(bundle, checker, keys, settings, progress))


def _apgd_t(bundle, checker, keys, settings, progress):
    return apgd_targeted_body(bundle, checker, keys, steps=settings.steps, restarts=settings.restarts,
                         targets=settings.targets, progress=progress)


def _fab_t(bundle, checker, keys, settings, progress):
    return fab_targeted_body(bundle, checker, keys, steps=settings.steps, restarts=settings.restarts,
                        targets=settings.targets, progress=progress)


def _square(bundle, checker, keys, settings, progress):
    return square_search(bundle, checker, keys, queries=settings.queries, restarts=settings.restarts,
                         progress=progress)


def _fool(method: str) -> Body:
    """deepprobe.attack's pgd / fgsm / cw as a cascade stage (each image seeded from its own key)."""
    def body(bundle, checker, keys, settings, progress):
        cost = torch.zeros(checker.x.shape[0], dtype=torch.long, device=checker.x.device)
        report = None if progress is None else (lambda step, total, _loss, _fwd: progress(step, total))
        for todo in groups((~checker.success).nonzero().flatten(), checker.group):
            with torch.enable_grad():  # robust_batch runs under no_grad; the engine needs gradients
                res = fool.attack(bundle, checker.x[todo], labels=checker.labels[todo], method=method,
                                  eps=checker.eps, norm=settings.norm, steps=settings.steps, seed=keys[todo].tolist(),
                                  callback=report)
            checker(todo, res.images.to(checker.x.device))
            cost[todo] = res.steps.to(cost.device)
        return cost
    return body


ATTACKS: dict[str, Attack] = {
    "apgd-ce": Attack("apgd-ce", apgd_untargeted("ce"), "steps"),
    "apgd-dlr": Attack("apgd-dlr", apgd_untargeted("dlr"), "steps"),
    "apgd-t": Attack("apgd-t", _apgd_t, "steps"),
    "fab-t": Attack("fab-t", _fab_t, "steps"),
    "square": Attack("square", _square, "queries"),
    "pgd": Attack("pgd", _fool("pgd"), "steps"),
    "fgsm": Attack("fgsm", _fool("fgsm"), "steps"),
    "cw": Attack("cw", _fool("cw"), "steps"),
}


@dataclass
class StageProgress:
    """What `callback` gets, during and at the end of each stage (attack at one eps) of robust_batch."""

    attack: str  # stage name (a repeated attack is "apgd-ce#2")
    eps: float
    step: int  # steps/queries done in this stage (its `steps` when finished)
    steps: int  # steps/queries the stage runs at most (per image, all targets and restarts together)
    robust: int  # images (of the batch, or of the pool) still robust at this eps
    finished: bool  # True once, when the stage is over


@dataclass
class RobustBatch:
    """Per-image records and per-stage robustness of one batch (see robust_batch)."""

    records: list[dict]
    stage_robust: dict[float, dict[str, torch.Tensor]]
    adversarial: dict[float, torch.Tensor]
    eps: list[float] = field(default_factory=list)  # the budgets, ascending
    stages: list[str] = field(default_factory=list)  # stage names, in order


def robust_batch(bundle: ModelBundle, x: torch.Tensor, labels, eps: float | Iterable[float],
                 cascade: str | Sequence[str] = DEFAULT_CASCADE, settings: AttackSettings | None = None,
                 seeds: Seeds = None, callback: Callable[[StageProgress], None] | None = None,
                 examples: bool = True, group: int | None = None, count: ForwardCount | None = None) -> RobustBatch:
    """Attack a batch `x` (N,3,H,W in [0,1], rounded to the 8-bit grid first) with true `labels` (N,).

    cascade: attack names and/or `autoattack` (expanded by expand_cascade). seeds: one int per image (an
    image's result then never depends on its batch: pass ids that are stable across runs and shards), an
    int s (image i uses s + i) or None (image i uses i). callback(StageProgress) is called as stages run.
    examples=False leaves `adversarial` empty (saves a copy of the batch per eps on the CPU).
    group: images per forward pass (None: all N at once). With N larger (a pool of batches), each attack runs on
    every image still robust as one state, its forward passes `group` images at a time, as AutoAttack runs each
    attack over all remaining images at full batch size: as images break and leave, the others fill the passes
    (every pass full but the last of each step). count: a ForwardCount; each attack's passes count under its stage
    name, the checks of its 8-bit examples (a few images at a time) under "<stage> check".

    Returns RobustBatch with
      records[i] = {"clean_pred", "clean_correct", "eps": {eps_key(e): {"robust", "broken_by", "broken_at",
                   "final_class", "linf", "l2", "cost", "seconds"}}}; broken_by is the stage that broke the
                   image ("clean" if misclassified clean, None if robust), broken_at the eps_key where it broke
                   (smaller than e when inherited); linf/l2 of the returned 8-bit example in [0,1] units;
                   cost the steps or queries spent at this eps; seconds its share of the wall time of the
                   stages that ran on it at this eps (stage time / images in the stage).
      stage_robust[e][stage] = (N,) bool on the CPU, robust after that stage (eps 0: the clean result).
      adversarial[e] = (N,3,H,W) on the CPU, the 8-bit example where broken, else the rounded clean image.
    """
    settings = settings or AttackSettings()
    names = expand_cascade(cascade)
    stages = stage_names(names)
    budgets = _budgets(eps)
    x, labels, keys = prepare(bundle, x, labels, 0.0, settings.norm, seeds)
    n = x.shape[0]
    _check_labels(bundle, labels)
    count = count or ForwardCount()
    with fool.eval_mode(bundle.net), torch.no_grad():
        clean_pred = logits(bundle, x, group).argmax(1)
        robust = clean_pred == labels
        adv, final = x.clone(), clean_pred.clone()
        broken_by = [None if bool(ok) else "clean" for ok in robust.tolist()]
        broken_at: list[str | None] = [None if b is None else eps_key(0.0) for b in broken_by]
        stage_robust: dict[float, dict[str, torch.Tensor]] = {}
        adversarial: dict[float, torch.Tensor] = {}
        per_eps: list[dict] = []
        for e in budgets:
            cost = torch.zeros(n, dtype=torch.long, device=x.device)
            seconds = torch.zeros(n, dtype=torch.float64)
            stage_robust[e] = {}
            for stage, name in zip(stages, names):
                idx = robust.nonzero().flatten()
                if e > 0 and idx.numel():
                    checker = Checker(bundle, x[idx], labels[idx], e, settings.norm, group, count)
                    report = _stage_progress(callback, stage, e, robust, checker, _total(name, settings))
                    start = time.perf_counter()
                    with count.during(stage):
                        cost[idx] += ATTACKS[name].body(bundle, checker, rng.derive(keys[idx], stage), settings,
                                                        report)
                    if x.device.type == "cuda":
                        torch.cuda.synchronize(x.device)
                    seconds[idx.cpu()] += (time.perf_counter() - start) / idx.numel()
                    hit = checker.success
                    rows = idx[hit]
                    robust[rows] = False
                    adv[rows] = checker.images[hit]
                    final[rows] = checker.predicted[hit]
                    for i in rows.tolist():
                        broken_by[i], broken_at[i] = stage, eps_key(e)
                stage_robust[e][stage] = robust.cpu().clone()
                if callback is not None and e > 0:
                    callback(StageProgress(stage, e, _total(name, settings), _total(name, settings),
                                           int(robust.sum()), True))
            if examples:
                adversarial[e] = adv.cpu().clone()
            per_eps.append(_eps_records(e, robust, broken_by, broken_at, final, adv, x, cost, seconds))
    clean_pred_list, correct = clean_pred.tolist(), (clean_pred == labels).tolist()
    records = [{"clean_pred": clean_pred_list[i], "clean_correct": bool(correct[i]),
                "eps": {eps_key(e): rows[i] for e, rows in zip(budgets, per_eps)}} for i in range(n)]
    return RobustBatch(records, stage_robust, adversarial, budgets, stages)


def _budgets(eps) -> list[float]:
    values = [eps] if isinstance(eps, (int, float)) else list(eps)
    if not values:
        raise DeepprobeError("no eps given")
    out = []
    for e in values:
        e = float(e)
        if not math.isfinite(e) or e < 0:
            raise DeepprobeError(f"eps must be a finite number >= 0, got {e}")
        out.append(e)
    return sorted(set(out))


def _check_labels(bundle: ModelBundle, labels: torch.Tensor) -> None:
    count = bundle.num_classes
    bad = (labels < 0) | (labels >= count) if count is not None else labels < 0
    if bool(bad.any()):
        raise DeepprobeError(f"label {int(labels[bad][0])} is not a class of the model (0..{(count or 1) - 1})")


def _total(name: str, settings: AttackSettings) -> int:
    if name in ("apgd-t", "fab-t"):
        return settings.steps * settings.restarts * settings.targets
    if name == "square":
        return settings.queries * settings.restarts
    if name == "fgsm":
        return 1
    return settings.steps * settings.restarts if name.startswith("apgd") else settings.steps


def _stage_progress(callback, stage: str, eps: float, robust: torch.Tensor, checker: Checker,
                    total: int) -> StepProgress | None:
    if callback is None:
        return None
    before = int(robust.sum())

    def report(step: int, steps: int) -> None:
        callback(StageProgress(stage, eps, min(step, total), total, before - int(checker.success.sum()), False))
    return report


def _eps_records(e, robust, broken_by, broken_at, final, adv, x, cost, seconds) -> list[dict]:
    linf, l2 = norms(adv - x)
    robust_l, final_l, linf_l, l2_l, cost_l = (t.tolist() for t in (robust, final, linf, l2, cost))
    seconds_l = seconds.tolist()
    return [{"robust": bool(robust_l[i]), "broken_by": None if robust_l[i] else broken_by[i],
             "broken_at": None if robust_l[i] else broken_at[i], "final_class": int(final_l[i]),
             "linf": float(linf_l[i]), "l2": float(l2_l[i]), "cost": int(cost_l[i]), "seconds": float(seconds_l[i])}
            for i in range(len(robust_l))]
