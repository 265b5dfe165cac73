"""One batch of `dp.evaluate`: every method's (and baseline's) maps and every metric's per-image scores.

`score_batch` is shared by evaluation on tensors (`evaluate.py`) and over a data set (`evaluate_data.py`), which
both import it from here (so neither imports the other back). A metric only says how to build perturbed image j;
the chunked forward loops live in `metrics/core.py`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..options.evaluate import CPU_FORWARD_BATCH, Options
from . import explain
from ..forwards import ForwardCount
from .faithfulness import auc, deletion_insertion_plan, edge_map, fractions, random_map
from .metrics import complexity as cx
from .metrics import faithfulness as fa
from .metrics import localisation as lo
from .metrics import randomisation as ra
from .metrics import robustness as ro
from .metrics.core import MetricScores, Plan, run_plans
from .sanity import randomization_groups

BASELINES = ("random", "edge")
CURVE_METRICS = ("deletion", "insertion")


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


def _ticked(c: _Context, images: int, scores: MetricScores) -> MetricScores:
    """Report to the progress bar the images a metric explained (metrics that run no forward loop of their own)."""
    c.tick(images)
    return scores


# metric name -> fn(context, maps) -> Plan: the metrics that score perturbed images. score_batch runs the plans of
# every such metric and map of a batch through shared forward passes (deletion/insertion: one plan for every map)
PLANS: dict[str, Callable[[_Context, torch.Tensor], Plan]] = {
    "pixel-flipping": lambda c, a: fa.pixel_flipping_plan(
        c.x, a, c.targets, features_in_step=c.opts.features_in_step, perturb_baseline=c.opts.perturb_baseline,
        seeds=c.seeds),
    "region-perturbation": lambda c, a: fa.region_perturbation_plan(
        c.x, a, c.targets, patch_size=c.opts.patch_size, regions_evaluation=c.opts.regions,
        perturb_baseline=c.opts.perturb_baseline, seeds=c.seeds),
    "faithfulness-correlation": lambda c, a: fa.faithfulness_correlation_plan(
        c.x, a, c.targets, nr_runs=c.opts.correlation_runs, subset_size=c.opts.subset_size,
        perturb_baseline=c.opts.perturb_baseline, seeds=c.seeds),
    "road": lambda c, a: fa.road_plan(c.x, a, c.targets, percentages=c.opts.road_percentages, noise=c.opts.road_noise,
                                      seeds=c.seeds),
    "infidelity": lambda c, a: fa.infidelity_plan(c.x, a, c.targets, perturb_patch_sizes=c.opts.infidelity_patches,
                                                  perturb_baseline=c.opts.perturb_baseline),
}
PERTURBATIONS = "perturbations"  # the ForwardCount stage of every plan's passes

# metric name -> fn(context, maps, explainer) -> MetricScores: the others (maps recomputed, or no model at all)
RUNNERS: dict[str, Callable[[_Context, torch.Tensor, Explainer], MetricScores]] = {
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
                callback: Callable[[int], None] | None = None, count: ForwardCount | None = None
                ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, MetricScores]]]:
    """Maps of every method (and baseline) for one batch on the probe's device, and every metric's scores:
    (maps[name] (N,H,W), scores[name][metric]). `seeds`: one per image (its draws depend on nothing else);
    `seed`: the run's seed (the sanity check's random network, the same for every batch). `count`: a ForwardCount
    (watching probe.net) gets the passes under stage "maps", PERTURBATIONS (every metric that scores perturbed
    images: they share passes) and the name of each metric that recomputes maps."""
    count = count or ForwardCount()
    names = [*methods, *(BASELINES if opts.baselines else ())]
    fns = {name: explainer_for(name, layer, (method_options or {}).get(name), opts.random_cell) for name in names}
    with count.during("maps"):
        maps = {name: fns[name](probe, x, targets, seeds) for name in names}
    if callback is not None:
        callback(len(methods) * x.shape[0])
    if masks is not None:
        masks = masks.to(x.device).bool()
    ctx = _Context(probe, x, targets, list(seeds), masks, opts, seed, callback)
    scores: dict[str, dict[str, MetricScores]] = {name: {} for name in names}
    with count.during(PERTURBATIONS):
        _perturbation_scores(ctx, names, maps, metrics, scores)
    if "sanity" in metrics:  # one randomized copy of the network for every map
        with count.during("sanity"):
            per_name = ra.sanity(probe, x, {n: (lambda fn: lambda pr, xx: fn(pr, xx, targets, ctx.seeds))(fns[n])
                                            for n in names}, maps, seed, callback)
        for name in names:
            scores[name]["sanity"] = per_name[name]
    for metric in metrics:
        if metric in (*CURVE_METRICS, *PLANS, "sanity"):
            continue
        with count.during(metric):
            for name in names:
                scores[name][metric] = RUNNERS[metric](ctx, maps[name], fns[name])
    return maps, {name: {m: scores[name][m] for m in metrics} for name in names}


def _perturbation_scores(c: _Context, names: list[str], maps: dict[str, torch.Tensor], metrics: Sequence[str],
                         scores: dict[str, dict[str, MetricScores]]) -> None:
    """Deletion/insertion and every PLANS metric of every map, in one stream of full forward passes."""
    plans, where = [], []
    wanted = [m for m in CURVE_METRICS if m in metrics]
    if wanted:
        plans.append(deletion_insertion_plan(c.x, [maps[n] for n in names], c.targets, c.opts.steps,
                                             c.opts.deletion_fill, c.opts.insertion_fill, c.seeds,
                                             c.probe.preprocess.mean, deletion="deletion" in wanted,
                                             insertion="insertion" in wanted))
        where.append(None)
    for metric in metrics:
        if metric in PLANS:
            for name in names:
                plans.append(PLANS[metric](c, maps[name]))
                where.append((name, metric))
    if not plans:
        return
    for place, result in zip(where, run_plans(c.probe.net, plans, c.forward, c.x.device, c.callback)):
        if place is not None:
            scores[place[0]][place[1]] = result
            continue
        axis = fractions(c.x.shape[-2] * c.x.shape[-1], c.opts.steps).float()
        for metric, curves in zip(CURVE_METRICS, result):
            if curves is not None:
                for k, name in enumerate(names):
                    scores[name][metric] = MetricScores(auc(curves[k], axis).double().cpu(), curves[k].cpu(),
                                                        axis.tolist())
