"""`dp.evaluate`: is an explanation faithful, robust, sensitive to the model, simple, on the object?

Every metric of `options.evaluate.METRICS` (Quantus 0.6's definitions, batched on the model's device, plus
RISE's deletion/insertion and the cascading-randomization sanity check) scores each method's maps and, as
references, a random map and an edge map that know nothing of the class. `score_batch` (scoring.py) does one
batch of photos; `evaluate` runs it on tensors (or streams a DATA argument through `evaluate_data`) and returns
per-image scores with their summary: mean, 95% interval and a ranking with paired tests (`metrics/summary.py`).
Everything is tensors on the probe's device; nothing writes to the filesystem.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..display import ShowsTable
from ..errors import DeepprobeError
from ..options.evaluate import (DEFAULT_METRICS, FILLS, LABEL_TARGET, MASK_METRICS, METRICS, PERTURB_BASELINES,
                                Options)
from ..options.ranges import check_ranges
from .maps import method_function, resolve_targets
from .metrics.core import MetricScores, as_seeds
from .metrics.summary import summarize
from .scoring import BASELINES, CURVE_METRICS, score_batch


# ------------------------------------------------------------------------------------------ what to run
def evaluation_methods(method: str | Sequence[str]) -> list[str]:
    """The methods to evaluate, deduplicated; unknown names and baseline names fail with one line."""
    methods = [method] if isinstance(method, str) else list(method)
    if not methods:
        raise DeepprobeError("give at least one explanation method")
    for m in methods:
        if m in BASELINES:
            raise DeepprobeError(f"{m!r} is a baseline name, not a method (the baselines are scored anyway)")
        method_function(m)  # unknown names fail here with the list of known ones
    return list(dict.fromkeys(methods))


def evaluation_metrics(metric: str | Sequence[str] | None = None, *, masks: bool = False, curves: bool = True,
                       sanity: bool = True) -> list[str]:
    """The metrics to compute: the names given ("all": every metric; localisation ones only with masks), or the
    default set (plus localisation when masks are given); --no-curves / --no-sanity leave those out."""
    names = [metric] if isinstance(metric, str) else list(metric or [])
    if not names:
        names = list(DEFAULT_METRICS) + (list(MASK_METRICS) if masks else [])
    expanded = []
    for name in names:
        if name == "all":
            expanded += [m for m in METRICS if masks or m not in MASK_METRICS]
        elif name not in METRICS:
            raise DeepprobeError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}, or all")
        elif name in MASK_METRICS and not masks:
            raise DeepprobeError(f"metric {name} needs a binary mask per image: give --masks DIR (same file stems "
                                 f"as the images) or a manifest with a mask column")
        else:
            expanded.append(name)
    chosen = [m for m in dict.fromkeys(expanded) if (curves or m not in CURVE_METRICS) and (sanity or m != "sanity")]
    if not chosen:
        raise DeepprobeError("nothing to do: every metric asked for is switched off (--no-curves / --no-sanity)")
    return chosen


def resolve_options(settings: dict) -> Options:
    """Options from keyword settings named like its fields (and the CLI flags), with the values checked."""
    known = {f.name for f in dataclasses.fields(Options)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise DeepprobeError(f"unknown evaluate setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    opts = dataclasses.replace(Options(), **settings)
    check_options(opts)
    return opts


def check_options(opts: Options, source: str | None = None) -> None:
    """Values a user can get wrong that would only fail deep inside a metric, reported before any work (numbers:
    the RANGES of options/evaluate.py; `source` names where they came from, as `check_ranges` does)."""
    check_ranges("evaluate", dataclasses.asdict(opts), source)
    for name, fill in (("--deletion-fill", opts.deletion_fill), ("--insertion-fill", opts.insertion_fill)):
        if fill not in FILLS:
            raise DeepprobeError(f"{name} must be one of {', '.join(FILLS)}, got {fill!r}")
    if opts.perturb_baseline not in PERTURB_BASELINES:
        raise DeepprobeError(f"--perturb-baseline must be one of {', '.join(PERTURB_BASELINES)}, "
                             f"got {opts.perturb_baseline!r}")
    for name in ("road_percentages", "infidelity_patches"):
        if not getattr(opts, name):
            raise DeepprobeError(f"--{name.replace('_', '-')} needs at least one value")


# ------------------------------------------------------------------------------------------ tensors
@dataclass
class EvaluateResult(ShowsTable):
    """Per-image scores of one evaluation on tensors: `scores[name][metric]` for each method and baseline. In Jupyter:
    the table `deepprobe evaluate` prints, with its curves and sanity plots."""

    methods: list[str]
    metrics: list[str]
    targets: torch.Tensor  # (N,) class indices explained
    probabilities: torch.Tensor  # (N,) the target's softmax probability on the clean photo
    seeds: list[int]
    scores: dict[str, dict[str, MetricScores]] = field(default_factory=dict)
    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # (N,H,W) in [0,1], methods and baselines
    settings: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.scores)

    def values(self) -> dict[str, dict[str, list[float]]]:
        """`values[name][metric]` = per-image numbers (nan where undefined)."""
        return {name: {m: [float(v) for v in s.values] for m, s in per.items()} for name, per in self.scores.items()}

    def summary(self) -> dict:
        """{"metrics": {name: {metric: {"mean", "ci95", "n"}}}, "ranking": {metric: ...}}, as `deepprobe evaluate`."""
        return summarize(self.values())

    def run_summary(self, probe) -> dict:
        """The summary `deepprobe evaluate` writes (with mean curves and their axes), from the per-image scores."""
        from .evaluate_data import record_of, summarize_records

        records = [record_of(i, self.scores, self.targets, self.probabilities, probe)
                   for i in range(len(self.targets))]
        axes = {m: list(s.axis) for per in self.scores.values() for m, s in per.items() if s.axis is not None}
        return summarize_records(records, self.methods, self.metrics, axes)

    def _plots(self) -> dict:
        from ..figures.evaluate import evaluate_plots

        (probe,) = self._needs("bundle")
        return evaluate_plots(self.run_summary(probe), self.metrics, probe.title, len(self.targets))

    def figure(self):
        """The table, curves and sanity plots `deepprobe evaluate` writes, one under another."""
        from ..display import stack

        return stack(list(self._plots().values()))

    def html_figures(self) -> list:
        return [image for name, image in self._plots().items() if name != "table"]

    def table_html(self) -> str:
        from ..figures.evaluate import evaluate_html

        return evaluate_html(self.summary(), self.metrics,
                             f"{len(self.targets)} image(s) · mean ± half the 95% interval; bold: best or not "
                             "significantly worse")

    # ---- the curves and numbers of the first release, read from `scores`
    def _by_name(self, metric: str, what: str) -> dict[str, torch.Tensor]:
        return {name: getattr(per[metric], what) for name, per in self.scores.items() if metric in per}

    @property
    def fractions(self) -> torch.Tensor:
        for metric in CURVE_METRICS:
            for per in self.scores.values():
                if metric in per:
                    return torch.tensor(per[metric].axis)
        return torch.empty(0)

    @property
    def deletion(self) -> dict[str, torch.Tensor]:  # (N, steps+1) target probability per map
        return self._by_name("deletion", "curve")

    @property
    def insertion(self) -> dict[str, torch.Tensor]:
        return self._by_name("insertion", "curve")

    @property
    def deletion_auc(self) -> dict[str, torch.Tensor]:  # (N,); lower is better
        return self._by_name("deletion", "values")

    @property
    def insertion_auc(self) -> dict[str, torch.Tensor]:  # (N,); higher is better
        return self._by_name("insertion", "values")

    @property
    def sanity(self) -> dict[str, torch.Tensor]:  # method -> (N, groups+1) Spearman with the original map
        return self._by_name("sanity", "curve")

    @property
    def sanity_layers(self) -> list[str]:  # "none", then the groups randomized, logits first
        for per in self.scores.values():
            if "sanity" in per:
                return list(per["sanity"].axis)
        return []


def evaluate(probe, data, method: str | Sequence[str] | None = None, *, methods: Sequence[str] | None = None,
             metrics: str | Sequence[str] | None = None, target=None, layer: str | None = None,
             masks=None, seed: int = 0, seeds: Sequence[int] | None = None,
             method_options: dict[str, dict] | None = None, callback: Callable[[int], None] | None = None,
             limit: int | None = None, sample: int | None = None, **settings):
    """Score explanation maps with the metrics of `options.evaluate.METRICS`.

    `data`: (N,3,H,W) photos in [0,1] -> EvaluateResult (per-image scores, curves and maps, in memory); or a
    DATA argument (folder tree, flat folder, glob, image files, .csv/.jsonl manifest; `limit`, `sample`) ->
    `evaluate_data.DataEvaluation`, streamed in chunks of `batch_size`. `method`/`methods`: explanation methods
    (default gradcam); `metrics`: names or "all" (default: the default set); `target` None explains each
    predicted class; `masks`: (N,H,W) binary tensor, or for DATA a folder of masks with the images' stems;
    `method_options` maps a method to its keyword options; `settings`: any Options field (steps, batch_size,
    features_in_step, ...). The probe's own weights are never changed (the sanity check randomizes a copy)."""
    if method is not None and methods is not None:
        raise DeepprobeError("give the methods once (method or methods)")
    check_ranges("evaluate", {"limit": limit, "sample": sample})
    opts = resolve_options(settings)
    chosen = evaluation_methods(methods if methods is not None else (method or opts.method))
    wanted = evaluation_metrics(metrics, masks=masks is not None, curves=opts.curves, sanity=opts.sanity)
    if not isinstance(data, torch.Tensor):
        from .evaluate_data import evaluate_data

        return evaluate_data(probe, data, chosen, wanted, opts, target=target, layer=layer, masks=masks, seed=seed,
                             method_options=method_options, limit=limit, sample=sample, callback=callback)
    if limit is not None or sample is not None:
        raise DeepprobeError("limit and sample select from a DATA argument; slice the tensor instead")
    if isinstance(target, str) and target == LABEL_TARGET:
        raise DeepprobeError(f"target={LABEL_TARGET!r} reads the labels of a DATA argument; for tensors give the "
                             "class indices (a (N,) tensor) as target")
    x = data.to(probe.device).float()
    if masks is not None and not isinstance(masks, torch.Tensor):
        raise DeepprobeError("masks for photos given as a tensor must be a (N,H,W) tensor (a folder goes with DATA)")
    if masks is not None and tuple(masks.shape) != (x.shape[0], *x.shape[-2:]):
        raise DeepprobeError(f"masks must be (N,H,W) = {(x.shape[0], *x.shape[-2:])}, got {tuple(masks.shape)}")
    clean = probe.predict(x)  # one clean pass: the predicted classes and the targets' probabilities
    targets = clean.argmax(1) if target is None else resolve_targets(probe, x, target)
    per_image = as_seeds(seed if seeds is None else seeds, x.shape[0])
    probs = clean.gather(1, targets.view(-1, 1))[:, 0]
    maps, scores = score_batch(probe, x, targets, per_image, chosen, wanted, opts, layer=layer,
                               method_options=method_options, masks=masks, seed=seed, callback=callback)
    return EvaluateResult(chosen, wanted, targets.cpu(), probs.cpu(), per_image, scores,
                          {k: v.cpu() for k, v in maps.items()},
                          settings=settings_record(opts, probe, seed, layer))._attach(bundle=probe)


def settings_record(opts: Options, probe, seed: int, layer: str | None) -> dict:
    """The settings that change a number, as plain values (for sidecars and run configurations)."""
    skip = {"method", "metric", "target", "layer", "masks", "curves", "sanity", "rank_timeout"}
    out = {k: v for k, v in dataclasses.asdict(opts).items() if k not in skip}
    return {**out, "seed": seed, "layer": layer, "fill_mean": list(probe.preprocess.mean)}
