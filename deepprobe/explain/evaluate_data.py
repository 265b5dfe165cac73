"""Explanation metrics over a data set, streamed: `deepprobe.data` reads the images in fixed chunks and keeps the
run folder (resume, torchrun shards, rank-0 merge); this module scores each chunk with `evaluate.score_batch` and
turns the per-image records into the summary (mean, 95% interval, n, ranking with paired tests, mean curves).

A record per image: {"target", "target_name", "probability", "scores": {name: {metric: {"value", "curve"?,
...}}}}. In a run folder, results.jsonl is then laid out one line per image x method x metric (`flat_lines`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import distributed
from ..display import ShowsTable
from ..errors import DeepprobeError
from ..forwards import ForwardCount, occupancy
from ..options.evaluate import LABEL_TARGET, METRICS, Options
from .masks import MaskSource, manifest_masks

ROUND = 6


@dataclass
class DataEvaluation(ShowsTable):
    """What `dp.evaluate` returns for a DATA argument: the summary and (in memory) every image's record. In
    Jupyter: the table `deepprobe evaluate` prints, with its curves and sanity plots."""

    methods: list[str]
    metrics: list[str]
    summary: dict
    records: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def values(self) -> dict[str, dict[str, list[float]]]:
        return per_image_values(self.records)

    def _plots(self) -> dict:
        from ..figures.evaluate import evaluate_plots

        (title,) = self._needs("model_title")
        return evaluate_plots(self.summary, self.metrics, title, self.summary["n"])

    def figure(self):
        from ..display import stack

        return stack(list(self._plots().values()))

    def html_figures(self) -> list:
        return [image for name, image in self._plots().items() if name != "table"]

    def table_html(self) -> str:
        from ..figures.evaluate import evaluate_html

        return evaluate_html(self.summary, self.metrics, f"{self.summary['n']} image(s) · mean ± half the 95% "
                                                         "interval; bold: best or not significantly worse")


def _number(value) -> float | None:
    value = float(value)
    return round(value, ROUND) if math.isfinite(value) else None


def record_of(i: int, scores: dict, targets, probs, probe) -> dict:
    """Image i's record: its class, clean probability and every name x metric result (value, curve, extras)."""
    out: dict = {}
    for name, per in scores.items():
        out[name] = {}
        for metric, s in per.items():
            entry = {"value": _number(s.values[i])}
            if s.curve is not None:
                entry["curve"] = [_number(v) for v in s.curve[i]]
            for key, extra in s.extra.items():
                entry[key] = _number(extra[i]) if extra.is_floating_point() else int(extra[i])
            for key, curve in s.curves.items():
                entry[f"{key}_curve"] = [_number(v) for v in curve[i]]
            out[name][metric] = entry
    target = int(targets[i])
    return {"target": target, "target_name": probe.class_name(target), "probability": _number(probs[i]),
            "scores": out}


class BatchScorer:
    """The runner's per-batch function: maps, metrics, one record per image (randomness from batch.seeds)."""

    def __init__(self, probe, methods, metrics, opts: Options, *, target=None, layer=None, method_options=None,
                 masks: MaskSource | None = None, seed: int = 0,
                 callback: Callable[[int], None] | None = None):
        self.probe, self.methods, self.metrics, self.opts = probe, list(methods), list(metrics), opts
        self.target = probe.class_index(target) if target not in (None, LABEL_TARGET) else target
        self.layer, self.method_options, self.masks = layer, method_options, masks
        self.seed, self.callback = seed, callback
        self.count = ForwardCount()

    def stats(self) -> dict:
        """Forward passes and images per stage since the last call (the data runner stores them per chunk)."""
        return {"forwards": self.count.take()}

    def _tick(self, images: int) -> None:
        distributed.progressed()  # other ranks waiting on this one see it is working
        if self.callback is not None:
            self.callback(images)

    def __call__(self, batch) -> list[dict]:
        with self.count.watching(self.probe.net):
            return self._score(batch)

    def _score(self, batch) -> list[dict]:
        import torch

        from .scoring import score_batch

        probe = self.probe
        x = batch.images.to(probe.device).float()
        with torch.no_grad(), self.count.during("clean"):
            probs_all = probe.predict(x)
        if self.target == LABEL_TARGET:
            if batch.labels is None:
                raise DeepprobeError(label_target_error())
            targets = batch.labels.to(x.device)
        elif self.target is None:
            targets = probs_all.argmax(1)
        else:
            targets = torch.full((len(x),), self.target, device=x.device)
        probs = probs_all.gather(1, targets.view(-1, 1))[:, 0].cpu()
        masks = self.masks.load([item.path for item in batch.items], probe.preprocess) if self.masks else None
        _, scores = score_batch(probe, x, targets, batch.seeds, self.methods, self.metrics, self.opts,
                                layer=self.layer, method_options=self.method_options, masks=masks, seed=self.seed,
                                callback=self._tick, count=self.count)
        return [record_of(i, scores, targets.cpu(), probs, probe) for i in range(len(x))]


def occupancy_summary(stats: dict, opts: Options, device) -> dict:
    """How full the forward passes were per stage: mean images per pass / the largest pass asked for (the
    perturbation passes hold --forward-batch images: --batch-size on a GPU; on a CPU smaller on purpose), and the
    raw counts."""
    from .scoring import forward_batch

    size = max(opts.batch_size, forward_batch(opts, device))
    counts = stats.get("forwards", {})
    return {"occupancy": occupancy(counts, size), "forwards": counts, "forward_batch": forward_batch(opts, device)}


def mask_source(data, masks) -> MaskSource | None:
    """--masks DIR, or a manifest's mask column, or None."""
    if masks is not None and not hasattr(masks, "shape"):
        return MaskSource(folder=masks)
    if isinstance(data, (str, Path)) and Path(data).suffix.lower() in (".csv", ".jsonl") and Path(data).is_file():
        by_path = manifest_masks(Path(data))
        if by_path:
            return MaskSource(by_path=by_path)
    return None


def label_target_error() -> str:
    return (f"--target {LABEL_TARGET} explains each image's labelled class: DATA needs labels (class folders or a "
            "manifest with a label column); a flat folder's images have none")


def check_label_target(target, dataset) -> None:
    """Refuse --target label before any work when the data set has no labels."""
    from ..data import PREDICTIONS

    if target == LABEL_TARGET and dataset.labeling == PREDICTIONS:
        raise DeepprobeError(label_target_error())


def open_data(probe, data, limit: int | None, sample: int | None, seed: int):
    """A Dataset from a DATA argument (or an already opened one) with --limit/--sample applied."""
    from ..data import Dataset, open_dataset, select

    if isinstance(data, Dataset):
        return select(data, limit=limit, sample=sample, seed=seed)
    return select(open_dataset(data, probe.labels, probe.num_classes, probe.spec), limit=limit, sample=sample,
                  seed=seed)


def evaluate_data(probe, data, methods: Sequence[str], metrics: Sequence[str], opts: Options, *, target=None,
                  layer=None, masks=None, seed: int = 0, method_options=None, limit=None, sample=None,
                  callback=None) -> DataEvaluation:
    """`dp.evaluate` on a DATA argument: every chunk scored in memory, summarized (nothing written)."""
    from ..data import run_dataset
    from ..data.runner import Hooks

    dataset = open_data(probe, data, limit, sample, seed)
    check_label_target(target, dataset)
    source = mask_source(data, masks)
    if source is not None:
        source.check([item.path for item in dataset.items])
    scorer = BatchScorer(probe, methods, metrics, opts, target=target, layer=layer, method_options=method_options,
                         masks=source, seed=seed)
    outcome = run_dataset(dataset, scorer, batch_size=opts.batch_size, seed=seed, preprocess=probe.preprocess,
                          hooks=Hooks(progress=callback, stats=scorer.stats))
    from .scoring import curve_axes

    records = list(outcome.records())
    summary = summarize_records(records, methods, metrics, curve_axes(probe, metrics, opts))
    summary.update(occupancy_summary(outcome.stats, opts, probe.device))
    return DataEvaluation(list(methods), list(metrics), summary, records,
                          outcome.skipped)._attach(model_title=probe.title)


# ------------------------------------------------------------------------------------------ summaries
def per_image_values(records: Iterable[dict]) -> dict[str, dict[str, list[float]]]:
    """values[name][metric] = [per-image value (nan where undefined)], in record order."""
    values: dict[str, dict[str, list[float]]] = {}
    for record in records:
        for name, per in record["scores"].items():
            for metric, entry in per.items():
                v = entry.get("value")
                values.setdefault(name, {}).setdefault(metric, []).append(math.nan if v is None else float(v))
    return values


class CurveMeans:
    """Running means of every curve (name x metric x curve key), so memory does not grow with the data set."""

    def __init__(self):
        self.sums: dict[tuple[str, str, str], list[float]] = {}
        self.counts: dict[tuple[str, str, str], int] = {}

    def add(self, record: dict) -> None:
        for name, per in record["scores"].items():
            for metric, entry in per.items():
                for key, curve in entry.items():
                    if not key.endswith("curve") or not curve or any(v is None for v in curve):
                        continue
                    k = (name, metric, key)
                    if k not in self.sums:
                        self.sums[k], self.counts[k] = [0.0] * len(curve), 0
                    if len(curve) == len(self.sums[k]):  # images of another size make other curves: skipped
                        self.sums[k] = [s + v for s, v in zip(self.sums[k], curve)]
                        self.counts[k] += 1

    def means(self) -> dict[str, dict[str, dict[str, list[float]]]]:
        out: dict = {}
        for (name, metric, key), sums in self.sums.items():
            out.setdefault(metric, {}).setdefault(key, {})[name] = [round(s / self.counts[(name, metric, key)], ROUND)
                                                                    for s in sums]
        return out


def summarize_records(records: Iterable[dict], methods: Sequence[str], metrics: Sequence[str],
                      axes: dict[str, list] | None = None) -> dict:
    """The run's summary from per-image records (streamed once): metrics[name][metric] = {"mean", "ci95", "n"},
    ranking per metric, mean curves with their x axes, and what each metric is."""
    from .metrics.summary import summarize

    curves = CurveMeans()
    values: dict[str, dict[str, list[float]]] = {}
    count = 0
    for record in records:
        count += 1
        curves.add(record)
        for name, per in per_image_values([record]).items():
            for metric, v in per.items():
                values.setdefault(name, {}).setdefault(metric, []).extend(v)
    if not count:
        raise DeepprobeError("no image could be evaluated")
    summary = summarize(values)
    names = list(values)
    return {"n": count, "methods": list(methods), "baselines": [n for n in names if n not in methods],
            "metric_names": list(metrics), **summary, "curves": curves.means(), "axes": axes or {},
            "definitions": {m: {"family": METRICS[m][0], "better": "higher" if METRICS[m][1] else "lower",
                                "quantus": METRICS[m][2]} for m in metrics}}


def flat_lines(records: Iterable[dict]) -> Iterable[dict]:
    """One line per image x method x metric: {"index", "path", "label", "target", "target_name",
    "probability", "method", "metric", "value", "curve"?, ...}."""
    for record in records:
        head = {k: v for k, v in record.items() if k != "scores"}
        for name, per in record["scores"].items():
            for metric, entry in per.items():
                yield {**head, "method": name, "metric": metric, **entry}
