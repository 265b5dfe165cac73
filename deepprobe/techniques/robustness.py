"""Accuracy under attack over a data set: per image, per budget and per stage of the attack cascade.

    res = dp.robustness(probe, "imagenet/val", attacks=("autoattack",), eps=(4/255,), sample=5000)
    res.clean_accuracy, res.robust_accuracy[4/255], res.stage_accuracy[4/255]["apgd-ce"], res.records

The attacks (techniques/attacks) run as a cascade on each batch; every verdict is taken on the 8-bit image
(the adversarial image rounded as a saved PNG would be, re-classified here once more). The data layer
(deepprobe.data) streams the images, so memory stays flat; the CLI adds a run folder that resumes and shards
under torchrun. With unlabeled data the model's own clean predictions are the labels: the figure is then
"prediction robustness" (clean accuracy is 1 by construction), and the summary says so.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..data import Batch, Dataset, from_tensors, open_dataset, run_dataset, select, wilson
from ..data.runner import Hooks
from ..data.sources import PREDICTIONS
from ..data.stats import WILSON
from ..display import ShowsTable
from ..errors import DeepprobeError
from ..forwards import ForwardCount, occupancy
from ..io import quantize
from ..models import ModelBundle
from ..models.bundle import require_classifier
from ..options.attacks import AttackSettings, eps_key, expand_cascade, stage_names
from ..options.ranges import check_ranges
from ..options.robustness import Options, auto_pool, eps_for

_DEFAULTS = Options()


@dataclass(frozen=True)
class Plan:
    """What to run on every batch: the cascade, the budgets and how hard each attack tries."""

    cascade: tuple[str, ...]
    eps: tuple[float, ...]
    settings: AttackSettings

    @property
    def stages(self) -> list[str]:
        return stage_names(self.cascade)

    @property
    def keys(self) -> list[str]:
        return [eps_key(e) for e in self.eps]

    def describe(self) -> dict:
        s = self.settings
        return {"attacks": list(self.cascade), "eps": list(self.eps), "norm": s.norm, "steps": s.steps,
                "restarts": s.restarts, "targets": s.targets, "queries": s.queries}


def make_plan(attacks: str | Sequence[str] = _DEFAULTS.attack, eps: float | Sequence[float] | None = None,
              norm: str = _DEFAULTS.norm, steps: int = _DEFAULTS.steps, restarts: int = _DEFAULTS.restarts,
              targets: int = _DEFAULTS.targets, queries: int = _DEFAULTS.queries) -> Plan:
    """Check the attack names and budgets (eps >= 0; L-inf eps <= 1, the whole pixel range)."""
    check_ranges("robustness", locals())
    cascade = tuple(expand_cascade(attacks))
    settings = AttackSettings(norm=norm, steps=steps, restarts=restarts, targets=targets, queries=queries)
    budgets = eps_for(norm, list(eps) if isinstance(eps, (list, tuple)) else eps)
    return Plan(cascade, tuple(budgets), settings)


class BatchAttack:
    """The per-unit function: clean predictions, the cascade at every eps, an independent re-check of each
    adversarial image on the 8-bit grid. Called on one Batch, or on a pool of them (a list): the pool's images
    are attacked together, each attack on every image still robust, `batch_size` images per forward pass, so the
    passes stay full as images break (per-image results depend only on the image, its seed and the pool's fixed
    composition). With `keep_images`, `kept[chunk]` holds each batch's clean and adversarial images (for example
    panels). `count` counts forward passes per stage (`stats()` hands them to the data runner)."""

    def __init__(self, bundle: ModelBundle, plan: Plan, keep_images: bool = False,
                 callback: Callable[[Any], None] | None = None, batch_size: int | None = None):
        self.bundle = bundle
        self.plan = plan
        self.keep_images = keep_images
        self.callback = callback  # gets robust_batch's StageProgress as the attacks run
        self.batch_size = batch_size  # images per forward pass (None: each batch's own size)
        self.count = ForwardCount()
        self.kept: dict[int, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}

    def __call__(self, batch: Batch | list[Batch]) -> list[dict] | list[list[dict]]:
        if isinstance(batch, list):
            return self.pool(batch)
        return self.pool([batch])[0]

    def pool(self, batches: list[Batch]) -> list[list[dict]]:
        """One list of records per batch; batches whose images differ in size are attacked apart."""
        self.kept = {}
        by_size: dict[tuple[int, ...], list[int]] = {}
        for k, batch in enumerate(batches):
            by_size.setdefault(tuple(batch.images.shape[-2:]), []).append(k)
        out: list[list[dict]] = [[] for _ in batches]
        with self.count.watching(self.bundle.net):
            for members in by_size.values():
                for k, records in zip(members, self._attack([batches[k] for k in members])):
                    out[k] = records
        return out

    def stats(self) -> dict:
        """Forward passes and images per stage since the last call (the data runner stores them per unit)."""
        return {"forwards": self.count.take()}

    def _attack(self, batches: list[Batch]) -> list[list[dict]]:
        from .attacks import robust_batch

        bundle, group = self.bundle, self.batch_size or max(len(b.items) for b in batches)
        with self.count.during("clean"):
            x = quantize(torch.cat([b.images for b in batches]).to(bundle.device))
            labels = torch.cat([b.labels.to(bundle.device) if b.labels is not None else
                                _predict(bundle, quantize(b.images.to(bundle.device)), group) for b in batches])
        out = robust_batch(bundle, x, labels, eps=list(self.plan.eps), cascade=list(self.plan.cascade),
                           settings=self.plan.settings, seeds=[s for b in batches for s in b.seeds],
                           callback=self._progress, group=group, count=self.count)
        adversarial = {key: _by_eps(out.adversarial, e, key) for e, key in zip(self.plan.eps, self.plan.keys)}
        records = []
        for i, theirs in enumerate(out.records):
            label = int(labels[i])
            records.append({"label": label, "label_name": bundle.class_name(label),
                            "clean_pred": int(theirs["clean_pred"]),
                            "clean_pred_name": bundle.class_name(int(theirs["clean_pred"])),
                            "clean_correct": bool(theirs["clean_correct"]),
                            "eps": {key: dict(theirs["eps"][key]) for key in self.plan.keys}})
        with self.count.during("clean"):
            self._recheck(records, adversarial, labels, group)
        per_batch, start = [], 0
        for batch in batches:
            end = start + len(batch.items)
            per_batch.append(records[start:end])
            if self.keep_images:
                self.kept[batch.chunk] = (x[start:end], {k: v[start:end] for k, v in adversarial.items()})
            start = end
        return per_batch

    def _progress(self, state) -> None:
        distributed.progressed()  # an attack step: other ranks waiting on this one see it is working
        if self.callback is not None:
            self.callback(state)

    def _recheck(self, records: list[dict], adversarial: dict[str, torch.Tensor], labels: torch.Tensor,
                 group: int) -> None:
        """Classify each returned image once more, as saved (8-bit), and make the record agree with that (a
        changed verdict is marked "rechecked" and counted in the summary; it should never happen)."""
        for key, images in adversarial.items():
            predicted = _predict(self.bundle, quantize(images), group).tolist()
            for record, pred, label in zip(records, predicted, labels.tolist()):
                entry = record["eps"][key]
                robust = record["clean_correct"] and pred == label
                if entry["final_class"] != pred or bool(entry["robust"]) != robust:
                    entry.update(final_class=pred, robust=robust, rechecked=True,
                                 broken_by=None if robust else entry["broken_by"])
                entry["final_name"] = self.bundle.class_name(pred)


def _predict(bundle: ModelBundle, images: torch.Tensor, group: int) -> torch.Tensor:
    """Predicted classes, `group` images per forward pass."""
    return torch.cat([bundle.predict(part).argmax(1) for part in images.split(group)])


def _by_eps(mapping: dict, eps: float, key: str) -> torch.Tensor:
    for k in (eps, key):
        if k in mapping:
            return mapping[k]
    for k, value in mapping.items():
        if eps_key(float(k)) == key:
            return value
    raise KeyError(f"no adversarial images for eps {key}")


class Tally:
    """The summary, accumulated one record at a time (records stream from results.jsonl)."""

    def __init__(self, plan: Plan, labeling: str):
        self.plan = plan
        self.labeling = labeling
        self.n = 0
        self.clean = 0
        self.robust = {k: 0 for k in plan.keys}
        self.stage = {k: [0] * len(plan.stages) for k in plan.keys}
        self.linf = {k: [] for k in plan.keys}
        self.l2 = {k: [] for k in plan.keys}
        self.cost = {k: 0 for k in plan.keys}
        self.seconds = {k: 0.0 for k in plan.keys}
        self.rechecked = 0

    def add(self, record: dict) -> None:
        self.n += 1
        self.clean += bool(record["clean_correct"])
        stages = self.plan.stages
        for key in self.plan.keys:
            entry = record["eps"][key]
            self.robust[key] += bool(entry["robust"])
            broken_at = stages.index(entry["broken_by"]) if entry.get("broken_by") in stages else -1
            for s in range(len(stages)):
                # robust after stage s: still robust at the end, or broken only by a later stage
                self.stage[key][s] += bool(entry["robust"]) or (record["clean_correct"] and broken_at > s)
            if record["clean_correct"] and not entry["robust"]:
                self.linf[key].append(float(entry["linf"]))
                self.l2[key].append(float(entry["l2"]))
            self.cost[key] += int(entry.get("cost") or 0)
            self.seconds[key] += float(entry.get("seconds") or 0.0)
            self.rechecked += bool(entry.get("rechecked"))

    def summary(self) -> dict:
        n = self.n
        share = (lambda k: round(k / n, 6)) if n else (lambda k: None)
        interval = (lambda k: [round(v, 6) for v in wilson(k, n)])
        keys, stages = self.plan.keys, self.plan.stages
        predictions = self.labeling == PREDICTIONS
        return {
            "n": n,
            "labels": self.labeling,
            "measure": ("prediction robustness: labels are the model's own clean predictions, so clean accuracy "
                        "is 1 by construction and each figure is the share of predictions an attack cannot "
                        "change") if predictions else "accuracy",
            "clean_accuracy": share(self.clean),
            "robust_accuracy": {k: share(self.robust[k]) for k in keys},
            "stage_accuracy": {k: dict(zip(stages, map(share, self.stage[k]))) for k in keys},
            "ci95": {"method": WILSON, "clean_accuracy": interval(self.clean),
                     "robust_accuracy": {k: interval(self.robust[k]) for k in keys},
                     "stage_accuracy": {k: dict(zip(stages, map(interval, self.stage[k]))) for k in keys}},
            "per_eps": {k: {"eps": e, "broken": len(self.linf[k]),
                            "median_linf": _median(self.linf[k]), "median_l2": _median(self.l2[k]),
                            "cost": self.cost[k], "attack_seconds": round(self.seconds[k], 3)}
                        for k, e in zip(keys, self.plan.eps)},
            "rechecked": self.rechecked,  # verdicts the independent 8-bit re-check changed (expected: 0)
        }


def occupancy_summary(stats: dict, batch_size: int) -> dict:
    """How full the forward passes were, per stage ("clean": clean predictions and re-checks): mean images per
    pass / batch_size, and the raw counts."""
    counts = stats.get("forwards", {})
    return {"occupancy": occupancy(counts, batch_size), "forwards": counts}


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 6) if values else None


@dataclass
class RobustnessResult(ShowsTable):
    """Figures over the data set (keys of the dicts: the eps values as given) and every image's record. In
    Jupyter: the table `deepprobe robustness` prints and its accuracy plot."""

    n: int
    clean_accuracy: float | None
    robust_accuracy: dict[float, float | None]
    stage_accuracy: dict[float, dict[str, float | None]]
    records: list[dict]
    summary: dict
    skipped: list[dict] = field(default_factory=list)

    @property
    def labels(self) -> str:
        return self.summary["labels"]

    def _title(self) -> str:
        from ..figures.robustness import robustness_title

        (model_title,) = self._needs("model_title")
        return robustness_title(model_title, self.summary)

    def figure(self):
        """Accuracy against eps, after each attack of the cascade (the CLI's robustness_accuracy.png)."""
        from .robustness_plot import accuracy_plot

        if not self.n:
            raise DeepprobeError("no image was attacked: nothing to plot")
        return accuracy_plot(dict(self.summary), title=self._title())

    def table_html(self) -> str:
        from ..figures.robustness import robustness_html

        return robustness_html(self.summary, self._title())


def as_dataset(data: Any, labels: Any, bundle: ModelBundle) -> Dataset:
    """A DATA spec (folder, manifest, glob), a list of paths, a (N,3,H,W) tensor or an (x, y) pair."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        data, labels = data
    if isinstance(data, torch.Tensor):
        y = None if labels is None else torch.as_tensor(labels).flatten()
        return from_tensors(data, y)
    if labels is not None:
        raise DeepprobeError("labels= goes with tensors; a DATA folder or manifest carries its own labels")
    if isinstance(data, (str, Path)) or (isinstance(data, Sequence) and all(isinstance(d, (str, Path)) for d in data)):
        return open_dataset(data, bundle.labels, bundle.num_classes, bundle.spec)
    raise DeepprobeError(f"data must be a folder, manifest, glob, list of paths or tensors, not {type(data).__name__}")


def robustness(bundle: ModelBundle, data: Any, labels: Any = None, *,
               attacks: str | Sequence[str] = tuple(_DEFAULTS.attack), eps: float | Sequence[float] | None = None,
               norm: str = _DEFAULTS.norm, steps: int = _DEFAULTS.steps, restarts: int = _DEFAULTS.restarts,
               targets: int = _DEFAULTS.targets, queries: int = _DEFAULTS.queries,
               batch_size: int = _DEFAULTS.batch_size, pool: int | None = _DEFAULTS.pool, seed: int = 0,
               limit: int | None = None, sample: int | None = None, workers: int = 0,
               callback: Callable[[int, int], None] | None = None) -> RobustnessResult:
    """Clean and robust accuracy of `bundle` on `data` under the attack cascade at each eps (in memory; the CLI
    adds a resumable run folder). `batch_size` images go through the model at once; `pool` batches are attacked
    together, so that the images still robust after each attack are regrouped into full batches (None: by the
    image size, `deepprobe.options.robustness.auto_pool`). `callback(images_done, images_total)` follows progress."""
    check_ranges("robustness", locals())
    require_classifier(bundle)
    plan = make_plan(attacks, eps, norm, steps, restarts, targets, queries)
    dataset = select(as_dataset(data, labels, bundle), limit=limit, sample=sample, seed=seed)
    if pool is None:
        tensor = data[0] if isinstance(data, tuple) else data
        size = tuple(tensor.shape[-2:]) if isinstance(tensor, torch.Tensor) else bundle.input_size
        pool = auto_pool(size, batch_size)
    done = [0]

    def progress(k: int) -> None:
        done[0] += k
        if callback:
            callback(done[0], len(dataset.items))

    attack = BatchAttack(bundle, plan, batch_size=batch_size)
    outcome = run_dataset(dataset, attack, batch_size=batch_size, seed=seed, preprocess=bundle.preprocess,
                          workers=workers, hooks=Hooks(progress=progress, stats=attack.stats), pool=pool)
    if not outcome.count and outcome.complete:
        raise DeepprobeError(f"no image of the data could be read ({len(outcome.skipped)} skipped)")
    tally = Tally(plan, dataset.labeling)
    records = list(outcome.records())
    for record in records:
        tally.add(record)
    summary = tally.summary()
    summary.update(occupancy_summary(outcome.stats, batch_size))
    summary.update(skipped=outcome.skipped, config={"model": bundle.spec, "weights": bundle.origin,
                                                    "data": dataset.describe(), "seed": seed, "batch_size": batch_size,
                                                    "pool": pool, **plan.describe()})
    return result_from_summary(summary, plan, records)._attach(model_title=bundle.title)


def result_from_summary(summary: dict, plan: Plan, records: list[dict]) -> RobustnessResult:
    """The result dataclass, its dicts keyed by the eps floats."""
    by_eps = dict(zip(plan.keys, plan.eps))
    return RobustnessResult(n=summary["n"], clean_accuracy=summary["clean_accuracy"],
                            robust_accuracy={by_eps[k]: v for k, v in summary["robust_accuracy"].items()},
                            stage_accuracy={by_eps[k]: v for k, v in summary["stage_accuracy"].items()},
                            records=records, summary=summary, skipped=summary.get("skipped", []))
