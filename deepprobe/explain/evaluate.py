"""`dp.evaluate`: is an explanation faithful, robust, sensitive to the model, simple, on the object?

Every metric of `options.evaluate.METRICS` (Quantus 0.6's definitions, batched on the model's device, plus
RISE's deletion/insertion and the cascading-randomization sanity check) scores each method's maps and, as
references, a random map and an edge map that know nothing of the class. `score_batch` does one batch of photos;
`evaluate` runs it on tensors (or streams a DATA argument through `evaluate_data`) and returns per-image scores
with their summary: mean, 95% interval and a ranking with paired tests (`metrics/summary.py`).
Everything is tensors on the probe's device; nothing writes to the filesystem.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import DeepprobeError
from ..options.evaluate import (CPU_FORWARD_BATCH, DEFAULT_METRICS, FILLS, MASK_METRICS, METRICS, PERTURB_BASELINES,
                                Options)
from . import explain, method_function, resolve_targets
from .faithfulness import auc, deletion_insertion, edge_map, fractions, random_map
from .metrics import complexity as cx
from .metrics import faithfulness as fa
from .metrics import localisation as lo
from .metrics import randomisation as ra
from .metrics import robustness as ro
from .metrics.core import MetricScores, as_seeds
from .metrics.summary import summarize
from .sanity import randomization_groups

BASELINES = ("random", "edge")
CURVE_METRICS = ("deletion", "insertion")


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


def check_options(opts: Options) -> None:
    """Values a user can get wrong that would only fail deep inside a metric, reported before any work."""
    if opts.forward_batch is not None and opts.forward_batch < 1:
        raise DeepprobeError(f"--forward-batch must be at least 1, got {opts.forward_batch}")
    for name in ("steps", "batch_size", "random_cell", "patch_size", "regions", "subset_size",
                 "sensitivity_samples", "lipschitz_samples"):
        if getattr(opts, name) < 1:
            raise DeepprobeError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(opts, name)}")
    if opts.correlation_runs < 2:
        raise DeepprobeError(f"--correlation-runs must be at least 2 (a correlation), got {opts.correlation_runs}")
    if opts.features_in_step is not None and opts.features_in_step < 1:
        raise DeepprobeError(f"--features-in-step must be at least 1, got {opts.features_in_step}")
    for name, fill in (("--deletion-fill", opts.deletion_fill), ("--insertion-fill", opts.insertion_fill)):
        if fill not in FILLS:
            raise DeepprobeError(f"{name} must be one of {', '.join(FILLS)}, got {fill!r}")
    if opts.perturb_baseline not in PERTURB_BASELINES:
        raise DeepprobeError(f"--perturb-baseline must be one of {', '.join(PERTURB_BASELINES)}, "
                             f"got {opts.perturb_baseline!r}")
    if not opts.road_percentages or any(not 0 < p < 100 for p in opts.road_percentages):
        raise DeepprobeError(f"--road-percentages must lie strictly between 0 and 100, got {opts.road_percentages}")
    if not opts.infidelity_patches or any(p < 1 for p in opts.infidelity_patches):
        raise DeepprobeError(f"--infidelity-patches must be at least 1 px, got {opts.infidelity_patches}")


def work_per_image(probe, methods: Sequence[str], metrics: Sequence[str], opts: Options,
                   size: Sequence[int] | None = None) -> int:
    """Images one photo sends through the network (perturbed copies, re-explained copies): the progress units."""
    h, w = size or probe.input_size or (224, 224)
    maps = len(methods) + (len(BASELINES) if opts.baselines else 0)
    per_map = {"deletion": opts.steps + 1, "insertion": opts.steps + 1,
               "pixel-flipping": len(fa.flip_counts(3, h, w, opts.features_in_step)),
               "region-perturbation": min(opts.regions, math.ceil(h / opts.patch_size) * math.ceil(w / opts.patch_size)),
               "faithfulness-correlation": opts.correlation_runs, "road": 2 * len(opts.road_percentages),
               "infidelity": sum(math.ceil(h / p) * math.ceil(w / p) for p in opts.infidelity_patches),
               "max-sensitivity": opts.sensitivity_samples + 1, "local-lipschitz": opts.lipschitz_samples,
               "random-logit": 1, "sanity": 1 + len(randomization_groups(probe.inner))}
    return len(methods) + sum(maps * per_map.get(m, 0) for m in metrics)


def curve_axes(probe, metrics: Sequence[str], opts: Options, size: Sequence[int] | None = None) -> dict[str, list]:
    """The x values of each curve metric for images of `size` (default: the model's input size): fractions of
    pixels or features moved, region steps, ROAD percentages, the sanity check's layer groups."""
    h, w = size or probe.input_size or (224, 224)
    out: dict[str, list] = {}
    for metric in metrics:
        if metric in CURVE_METRICS:
            out[metric] = [round(float(v), 6) for v in fractions(h * w, opts.steps)]
        elif metric == "pixel-flipping":
            out[metric] = [round(c / (3 * h * w), 6) for c in fa.flip_counts(3, h, w, opts.features_in_step)]
        elif metric == "region-perturbation":
            out[metric] = list(range(1, min(opts.regions, math.ceil(h / opts.patch_size)
                                            * math.ceil(w / opts.patch_size)) + 1))
        elif metric == "road":
            out[metric] = [float(p) for p in opts.road_percentages]
        elif metric == "sanity":
            out[metric] = ["none", *(name for name, _ in randomization_groups(probe.inner))]
    return out


def forward_batch(opts: Options, device) -> int:
    """Images per forward pass of the perturbation loops: --forward-batch, else --batch-size on a GPU and at most
    CPU_FORWARD_BATCH on a CPU, where small batches stay in cache (measured on the 2-core VM: Lite0 at 192 px runs
    ~2x faster per image in batches of 4-5 than of 32; README, benchmarks)."""
    if opts.forward_batch is not None:
        return opts.forward_batch
    return opts.batch_size if torch.device(device).type != "cpu" else min(opts.batch_size, CPU_FORWARD_BATCH)


# ------------------------------------------------------------------------------------------ one batch
Explainer = Callable[[object, torch.Tensor, torch.Tensor, Sequence[int]], torch.Tensor]


def explainer_for(name: str, layer: str | None = None, options: dict | None = None,
                  random_cell: int = Options.random_cell) -> Explainer:
    """fn(probe, x, targets, seeds) -> (N,H,W) maps of a method or a baseline (the random map depends on the
    image's seed only, the edge map on the photo only: neither knows the model or the class)."""
    if name == "random":
        return lambda probe, x, targets, seeds: random_map(x, seeds, random_cell)
    if name == "edge":
        return lambda probe, x, targets, seeds: edge_map(x)
    return lambda probe, x, targets, seeds: explain(probe, x, name, target=targets, layer=layer, **(options or {}))


@dataclass
class _Context:
    """What a metric needs besides the maps: the batch, its classes and seeds, the settings."""

    probe: object
    x: torch.Tensor
    targets: torch.Tensor
    seeds: list[int]
    masks: torch.Tensor | None
    opts: Options
    seed: int
    callback: Callable[[int], None] | None

    @property
    def forward(self) -> int:
        return forward_batch(self.opts, self.x.device)

    def explainer(self, fn: Explainer):
        return lambda x, targets, seeds: fn(self.probe, x, targets, seeds)

    def tick(self, images: int) -> None:
        if self.callback is not None:
            self.callback(images)


def _common(c: _Context) -> dict:
    return dict(seeds=c.seeds, batch_size=c.forward, callback=c.callback)


def _ticked(c: _Context, images: int, scores: MetricScores) -> MetricScores:
    """Report to the progress bar the images a metric explained (metrics that run no forward loop of their own)."""
    c.tick(images)
    return scores


# metric name -> fn(context, maps, explainer) -> MetricScores (deletion/insertion and sanity run once for every
# map together, in score_batch)
RUNNERS: dict[str, Callable[[_Context, torch.Tensor, Explainer], MetricScores]] = {
    "pixel-flipping": lambda c, a, fn: fa.pixel_flipping(
        c.probe.net, c.x, a, c.targets, features_in_step=c.opts.features_in_step,
        perturb_baseline=c.opts.perturb_baseline, **_common(c)),
    "region-perturbation": lambda c, a, fn: fa.region_perturbation(
        c.probe.net, c.x, a, c.targets, patch_size=c.opts.patch_size, regions_evaluation=c.opts.regions,
        perturb_baseline=c.opts.perturb_baseline, **_common(c)),
    "faithfulness-correlation": lambda c, a, fn: fa.faithfulness_correlation(
        c.probe.net, c.x, a, c.targets, nr_runs=c.opts.correlation_runs, subset_size=c.opts.subset_size,
        perturb_baseline=c.opts.perturb_baseline, **_common(c)),
    "road": lambda c, a, fn: fa.road(c.probe.net, c.x, a, c.targets, percentages=c.opts.road_percentages,
                                     noise=c.opts.road_noise, **_common(c)),
    "infidelity": lambda c, a, fn: fa.infidelity(
        c.probe.net, c.x, a, c.targets, perturb_patch_sizes=c.opts.infidelity_patches,
        perturb_baseline=c.opts.perturb_baseline, batch_size=c.forward, callback=c.callback),
    "max-sensitivity": lambda c, a, fn: _ticked(c, len(c.x) * (c.opts.sensitivity_samples + 1), ro.max_sensitivity(
        c.explainer(fn), c.x, c.targets, nr_samples=c.opts.sensitivity_samples,
        lower_bound=c.opts.sensitivity_radius, seeds=c.seeds, batch_size=c.forward)),
    "local-lipschitz": lambda c, a, fn: _ticked(c, len(c.x) * c.opts.lipschitz_samples, ro.local_lipschitz(
        c.explainer(fn), c.x, a, c.targets, nr_samples=c.opts.lipschitz_samples, perturb_std=c.opts.lipschitz_std,
        seeds=c.seeds, batch_size=c.forward)),
    "random-logit": lambda c, a, fn: _ticked(c, len(c.x), ra.random_logit(
        c.explainer(fn), c.x, a, c.targets, c.probe.num_classes, seeds=c.seeds)),
    "sparseness": lambda c, a, fn: cx.sparseness(a),
    "complexity": lambda c, a, fn: cx.complexity(a),
    "pointing-game": lambda c, a, fn: lo.pointing_game(a, c.masks),
    "relevance-mass": lambda c, a, fn: lo.relevance_mass(a, c.masks),
    "relevance-rank": lambda c, a, fn: lo.relevance_rank(a, c.masks, seeds=c.seeds),
}


def score_batch(probe, x: torch.Tensor, targets: torch.Tensor, seeds: Sequence[int], methods: Sequence[str],
                metrics: Sequence[str], opts: Options, *, layer: str | None = None,
                method_options: dict[str, dict] | None = None, masks: torch.Tensor | None = None, seed: int = 0,
                callback: Callable[[int], None] | None = None
                ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, MetricScores]]]:
    """Maps of every method (and baseline) for one batch on the probe's device, and every metric's scores:
    (maps[name] (N,H,W), scores[name][metric]). `seeds`: one per image (its draws depend on nothing else);
    `seed`: the run's seed (the sanity check's random network, the same for every batch)."""
    names = [*methods, *(BASELINES if opts.baselines else ())]
    fns = {name: explainer_for(name, layer, (method_options or {}).get(name), opts.random_cell) for name in names}
    maps = {name: fns[name](probe, x, targets, seeds) for name in names}
    if callback is not None:
        callback(len(methods) * x.shape[0])
    if masks is not None:
        masks = masks.to(x.device).bool()
    ctx = _Context(probe, x, targets, list(seeds), masks, opts, seed, callback)
    scores: dict[str, dict[str, MetricScores]] = {name: {} for name in names}
    wanted = [m for m in CURVE_METRICS if m in metrics]
    if wanted:
        curves = deletion_insertion(probe.net, x, [maps[n] for n in names], targets, opts.steps, opts.deletion_fill,
                                    opts.insertion_fill, ctx.forward, ctx.seeds, probe.preprocess.mean, callback,
                                    deletion="deletion" in wanted, insertion="insertion" in wanted)
        axis = fractions(x.shape[-2] * x.shape[-1], opts.steps).float()
        for metric, result in zip(CURVE_METRICS, curves):
            if result is not None:
                for k, name in enumerate(names):
                    scores[name][metric] = MetricScores(auc(result[k], axis).double().cpu(), result[k].cpu(),
                                                        axis.tolist())
    if "sanity" in metrics:  # one randomized copy of the network for every map
        per_name = ra.sanity(probe, x, {n: (lambda fn: lambda pr, xx: fn(pr, xx, targets, ctx.seeds))(fns[n])
                                        for n in names}, maps, seed, callback)
        for name in names:
            scores[name]["sanity"] = per_name[name]
    for metric in metrics:
        if metric in (*CURVE_METRICS, "sanity"):
            continue
        for name in names:
            scores[name][metric] = RUNNERS[metric](ctx, maps[name], fns[name])
    return maps, {name: {m: scores[name][m] for m in metrics} for name in names}


# ------------------------------------------------------------------------------------------ tensors
@dataclass
class EvaluateResult:
    """Per-image scores of one evaluation on tensors: scores[name][metric] for each method and baseline."""

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
        """values[name][metric] = per-image numbers (nan where undefined)."""
        return {name: {m: [float(v) for v in s.values] for m, s in per.items()} for name, per in self.scores.items()}

    def summary(self) -> dict:
        """{"metrics": {name: {metric: {"mean", "ci95", "n"}}}, "ranking": {metric: ...}}, as `deepprobe evaluate`."""
        return summarize(self.values())

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
    opts = resolve_options(settings)
    chosen = evaluation_methods(methods if methods is not None else (method or opts.method))
    wanted = evaluation_metrics(metrics, masks=masks is not None, curves=opts.curves, sanity=opts.sanity)
    if not isinstance(data, torch.Tensor):
        from .evaluate_data import evaluate_data

        return evaluate_data(probe, data, chosen, wanted, opts, target=target, layer=layer, masks=masks, seed=seed,
                             method_options=method_options, limit=limit, sample=sample, callback=callback)
    if limit is not None or sample is not None:
        raise DeepprobeError("limit and sample select from a DATA argument; slice the tensor instead")
    x = data.to(probe.device).float()
    if masks is not None and not isinstance(masks, torch.Tensor):
        raise DeepprobeError("masks for photos given as a tensor must be a (N,H,W) tensor (a folder goes with DATA)")
    if masks is not None and tuple(masks.shape) != (x.shape[0], *x.shape[-2:]):
        raise DeepprobeError(f"masks must be (N,H,W) = {(x.shape[0], *x.shape[-2:])}, got {tuple(masks.shape)}")
    targets = resolve_targets(probe, x, target)
    per_image = as_seeds(seed if seeds is None else seeds, x.shape[0])
    probs = probe.predict(x).gather(1, targets.view(-1, 1))[:, 0]
    maps, scores = score_batch(probe, x, targets, per_image, chosen, wanted, opts, layer=layer,
                               method_options=method_options, masks=masks, seed=seed, callback=callback)
    return EvaluateResult(chosen, wanted, targets.cpu(), probs.cpu(), per_image, scores,
                          {k: v.cpu() for k, v in maps.items()}, settings=settings_record(opts, probe, seed, layer))


def settings_record(opts: Options, probe, seed: int, layer: str | None) -> dict:
    """The settings that change a number, as plain values (for sidecars and run configurations)."""
    skip = {"method", "metric", "target", "layer", "masks", "curves", "sanity"}
    out = {k: v for k, v in dataclasses.asdict(opts).items() if k not in skip}
    return {**out, "seed": seed, "layer": layer, "fill_mean": list(probe.preprocess.mean)}
