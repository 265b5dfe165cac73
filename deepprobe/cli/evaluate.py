"""`deepprobe evaluate`: score explanation maps with Quantus's metric families (plus RISE deletion/insertion and the
sanity check), on a few photos or streamed over a data set (resumable, sharded under torchrun)."""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import DeepprobeError
from ..options.evaluate import (DEFAULT_METHODS, DEFAULT_METRICS, FILLS, LABEL_TARGET, METRICS, PERTURB_BASELINES,
                                Options)
from . import app
from .common import command, err_console, opt, out_console
from .prompts import apply_prompts, labels_option, text_option

PLOTS = ("curves", "sanity", "table")


@command(app, "evaluate")
def evaluate_cmd(run, inputs: list[str] = typer.Argument(..., metavar="IMAGES... | DATA",
                                                         help="Photo files or globs (a quick look: plots and a "
                                                              "table), or DATA: a folder (class folders or flat) "
                                                              "or a .csv/.jsonl manifest (a data-set run: --out is "
                                                              "its resumable run folder)."),
                 method: list[str] = opt(Options, "method", "--method", "-M",
                                         help=f"Explanation method; repeat for several (default "
                                              f"{', '.join(DEFAULT_METHODS)}; see `deepprobe explain --help`)."),
                 metric: list[str] = opt(Options, "metric", "--metric",
                                         help=f"Metric; repeat for several, or `all`: {', '.join(METRICS)} "
                                              f"(default: {', '.join(DEFAULT_METRICS)}; localisation metrics "
                                              f"join when masks are given)."),
                 target: str = opt(Options, "target", help="Class to explain (name or index), or `label`: each "
                                                           "image's own label (DATA with class folders or a "
                                                           "manifest); default: each image's predicted class."),
                 layer: str = opt(Options, "layer", help="Layer for CAM methods (see `deepprobe layers`)."),
                 masks: str = opt(Options, "masks", help="Folder of binary object masks, one per image with the "
                                                         "same file stem (pointing-game, relevance-mass, "
                                                         "relevance-rank); a manifest may name them in a `mask` "
                                                         "column instead."),
                 baselines: bool = opt(Options, "baselines", "--baselines/--no-baselines",
                                       help="Also score a random map and an edge map as references."),
                 steps: int = opt(Options, "steps", help="Deletion/insertion steps (each moves 1/steps of the "
                                                         "pixels)."),
                 batch_size: int = opt(Options, "batch_size", help="Images per chunk (what a crash can lose at "
                                                                   "most) and per forward pass on a GPU."),
                 forward_batch: int = opt(Options, "forward_batch",
                                          help="Images per forward pass of the perturbation metrics (default: "
                                               "--batch-size on a GPU, 4 on a CPU, where small batches run faster)."),
                 deletion_fill: str = opt(Options, "deletion_fill", help=f"What deleted pixels become: "
                                                                         f"{' | '.join(FILLS)}."),
                 insertion_fill: str = opt(Options, "insertion_fill", help=f"The canvas pixels are inserted "
                                                                           f"into: {' | '.join(FILLS)}."),
                 random_cell: int = opt(Options, "random_cell", help="Cell size (px) of the random baseline map "
                                                                     "(1 = per-pixel noise)."),
                 curves: bool = opt(Options, "curves", "--curves/--no-curves",
                                    help="Deletion and insertion (--no-curves leaves them out)."),
                 sanity: bool = opt(Options, "sanity", "--sanity/--no-sanity",
                                    help="Cascading model-parameter randomization (--no-sanity leaves it out)."),
                 perturb_baseline: str = opt(Options, "perturb_baseline",
                                             help=f"Quantus metrics: what a removed feature becomes: "
                                                  f"{' | '.join(PERTURB_BASELINES)} (the image's min, max, mean)."),
                 features_in_step: int = opt(Options, "features_in_step",
                                             help="pixel-flipping: features (pixel x channel) per step "
                                                  "(default: 1% of the pixels)."),
                 patch_size: int = opt(Options, "patch_size", help="region-perturbation: patch side (px)."),
                 regions: int = opt(Options, "regions", help="region-perturbation: patches removed."),
                 correlation_runs: int = opt(Options, "correlation_runs",
                                             help="faithfulness-correlation: random subsets."),
                 subset_size: int = opt(Options, "subset_size", help="faithfulness-correlation: features per "
                                                                     "subset."),
                 road_percentages: list[float] = opt(Options, "road_percentages", "--road-percentage",
                                                     help="road: percentage of pixels removed; repeat for "
                                                          "several (default 1, 3, ..., 99)."),
                 road_noise: float = opt(Options, "road_noise", help="road: noise std on imputed pixels."),
                 infidelity_patches: list[int] = opt(Options, "infidelity_patches", "--infidelity-patch",
                                                     help="infidelity: patch side (px); repeat for several."),
                 sensitivity_samples: int = opt(Options, "sensitivity_samples",
                                                help="max-sensitivity: noisy copies per image."),
                 sensitivity_radius: float = opt(Options, "sensitivity_radius",
                                                 help="max-sensitivity: uniform noise radius on [0,1] pixels."),
                 lipschitz_samples: int = opt(Options, "lipschitz_samples",
                                              help="local-lipschitz: noisy copies per image."),
                 lipschitz_std: float = opt(Options, "lipschitz_std",
                                            help="local-lipschitz: Gaussian noise std on [0,1] pixels."),
                 limit: int = opt(Options, "limit", help="DATA: only the first N images (after --sample)."),
                 sample: int = opt(Options, "sample", help="DATA: a fixed random subset of N images (--seed)."),
                 workers: int = opt(Options, "workers", help="DATA: DataLoader processes reading ahead."),
                 rank_timeout: float = opt(Options, "rank_timeout",
                                           help="torchrun: seconds a rank may go without progress (or 2 minutes "
                                                "without a heartbeat) before the others stop waiting for it and the "
                                                "run ends, finished chunks kept."),
                 text: list[str] = text_option(), labels: str = labels_option()):
    """Score explanation maps with the metrics researchers publish (Quantus 0.6's definitions, batched).

    Every method's maps, and a random and an edge map as references, are scored per image by each metric:
    faithfulness (deletion, insertion, pixel-flipping, region-perturbation, faithfulness-correlation, road,
    infidelity), robustness (max-sensitivity, local-lipschitz), randomisation (sanity, random-logit),
    complexity (sparseness, complexity) and, with --masks, localisation (pointing-game, relevance-mass,
    relevance-rank). The summary gives per method and metric the mean, its 95% interval and n, and ranks the
    methods per metric with paired Wilcoxon tests over the images. On CLIP the classes are the --text/--labels
    prompts.

    IMAGES (files, globs): plots (evaluate_curves.png, evaluate_sanity.png, evaluate_table.png) with JSON
    sidecars holding every number; nothing is resumed. DATA (a folder or a manifest, or any input with
    --limit/--sample): --out is the run folder: results.jsonl (one line per image x method x metric),
    summary.json and the plots; the same command resumes it, and it runs unchanged under
    `torchrun --nproc-per-node K deepprobe evaluate DATA ...` (each rank a fixed share, rank 0 merges)."""
    opts = run.options
    return _evaluate(run, inputs, opts, dataset_mode=_is_dataset(inputs, opts), prompts=(text, labels))


def _is_dataset(inputs: list[str], opts: Options) -> bool:
    from ..data.cifar import split_spec
    from ..data.sources import MANIFEST_SUFFIXES

    if opts.limit is not None or opts.sample is not None:
        return True
    if len(inputs) != 1:
        return False
    if split_spec(inputs[0]):
        return True
    path = Path(inputs[0])
    return path.is_dir() or (path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES)


def _evaluate(run, inputs: list[str], opts: Options, dataset_mode: bool,
              prompts: tuple[list[str], str | None] = ([], None)) -> int:
    from ..data import run_dataset
    from ..data.runner import Hooks
    from ..data.sources import flat_files
    from ..explain.evaluate import check_options, evaluation_methods, evaluation_metrics
    from ..explain.evaluate_data import BatchScorer, check_label_target, mask_source, open_data
    from ..explain.scoring import curve_axes, work_per_image
    from ..models.bundle import require_classifier
    from .inputs import image_paths
    from .ranks import ranked

    methods = evaluation_methods(opts.method or DEFAULT_METHODS)  # unknown names fail before the model loads
    check_options(opts)
    source = mask_source(inputs[0] if len(inputs) == 1 else None, opts.masks)
    metrics = evaluation_metrics(opts.metric, masks=source is not None, curves=opts.curves, sanity=opts.sanity)
    with ranked(run, opts.rank_timeout) as ctx:
        bundle = run.bundle()
        apply_prompts(run, bundle, *prompts)  # CLIP: the classes are the --text / --labels prompts
        require_classifier(bundle, "evaluate")
        if opts.target not in (None, LABEL_TARGET):
            bundle.class_index(opts.target)
        if opts.layer is not None:
            bundle.layer(opts.layer)
        if dataset_mode:
            dataset = open_data(bundle, inputs if len(inputs) > 1 else inputs[0], opts.limit, opts.sample,
                                run.common.seed)
        else:
            dataset = flat_files([str(p) for p in image_paths(run, inputs)])
        check_label_target(opts.target, dataset)
        if source is not None:
            source.check([item.path for item in dataset.items])
        for note in dataset.notes if run.show_progress or run.common.json else ():
            err_console.print(f"[yellow]note:[/yellow] {note}")
        per_image = work_per_image(bundle, methods, metrics, opts)
        config = _config(run, bundle, dataset, methods, metrics, opts) if dataset_mode else None
        with run.progress() as progress:
            task = progress.add_task("evaluate", total=1, info=", ".join(methods))

            def start(images: int, done_before: int) -> None:
                if done_before and run.show_progress:
                    err_console.print(f"[dim]resuming: {done_before} image(s) already done in this folder[/dim]")
                progress.update(task, total=max(1, images * per_image))

            scorer = BatchScorer(bundle, methods, metrics, opts, target=opts.target, layer=opts.layer,
                                 masks=source, seed=run.common.seed, callback=lambda k: progress.advance(task, k))
            outcome = run_dataset(dataset, scorer, batch_size=opts.batch_size, seed=run.common.seed,
                                  out=run.out_dir if dataset_mode else None, config=config, force=run.common.force,
                                  preprocess=bundle.preprocess, workers=opts.workers, ctx=ctx,
                                  hooks=Hooks(start=start, skip=_skipper(run, ctx, dataset_mode), stats=scorer.stats),
                                  invocation=run.record() if dataset_mode else None)
        if dataset_mode and outcome.folder is not None:
            run.run_id = (outcome.folder.stored_invocation() or {}).get("run_id", run.run_id)
        if not ctx.is_main:
            return run.finish()
        return _report(run, bundle, methods, metrics, opts, outcome, dataset, curve_axes(bundle, metrics, opts),
                       dataset_mode)


def _config(run, bundle, dataset, methods, metrics, opts: Options) -> dict:
    """Everything that changes a per-image result or which images are scored (the resume fingerprint)."""
    from ..explain.evaluate import settings_record

    return {"command": "evaluate", **run.model_config(), "data": dataset.describe(), "limit": opts.limit,
            "sample": opts.sample, "methods": methods, "metrics": metrics, "target": opts.target,
            "layer": opts.layer, "masks": str(Path(opts.masks).resolve()) if opts.masks else None,
            **settings_record(opts, bundle, run.common.seed, opts.layer)}


def _skipper(run, ctx, dataset_mode: bool):
    from .ranks import skip_note

    def fail(item, reason: str) -> None:  # a photo named on the command line: the run exits 1
        run.fail(str(item.path), reason)
    return skip_note(ctx) if dataset_mode else fail


def _report(run, bundle, methods, metrics, opts, outcome, dataset, axes, dataset_mode: bool) -> int:
    """Rank 0: summary (summary.json in a run folder), plots, flat results.jsonl, the table, the --json summary."""
    from ..explain.evaluate_data import flat_lines, occupancy_summary, summarize_records
    from ..figures.evaluate import evaluate_plots

    if not outcome.complete:
        err_console.print("[yellow]interrupted:[/yellow] finished chunks are kept; run the same command again "
                          "to go on")
        run.interrupted = True  # exit 130, as robustness
    if outcome.count == 0:
        raise DeepprobeError("no image could be evaluated")
    summary = summarize_records(outcome.records(), methods, metrics, axes)
    summary.update(model=bundle.spec, data=dataset.describe(), skipped=len(outcome.skipped),
                   complete=outcome.complete, **occupancy_summary(outcome.stats, opts, bundle.device),
                   ranks=outcome.ranks)
    photos = summary["n"]
    stem = "evaluate"
    if not dataset_mode and photos == 1:
        from ..io import safe_stem

        stem = f"{safe_stem(next(iter(outcome.records()))['path'])}_evaluate"
    info = dict(model=bundle.spec, images=photos, methods=methods, metrics=metrics)
    for plot, image in evaluate_plots(summary, metrics, bundle.title, photos).items():
        if plot == "table":  # the whole summary (`deepprobe report` shows it), and each photo's numbers
            result = {**info, "evaluation": {k: v for k, v in summary.items() if k not in ("curves", "axes")}}
            if not dataset_mode:
                result["per_image"] = list(outcome.records())
        else:
            result = {**info, "curves": summary["curves"], "axes": summary["axes"]}
        path = run.save_image(image, f"{stem}_{plot}.png", result=result, replace=dataset_mode)
        summary[f"{plot}_plot"] = str(path)
    if dataset_mode:
        folder = outcome.folder
        _write_flat(folder.results, flat_lines(folder.records()))
        summary["results"] = str(folder.results)
        summary["summary_file"] = str(folder.write_summary(summary))
        run.outputs += [folder.results, folder.summary]
    else:
        for record in outcome.records():
            run.add_result(record)
    run.summary["evaluation"] = summary
    run.summary.update(done_before=outcome.done_before, processed=outcome.processed)
    _table(run, bundle, summary, photos)
    return run.finish()


def _write_flat(path: Path, lines) -> None:
    """Rewrite results.jsonl one line per image x method x metric (read and written one line at a time)."""
    import json
    import os

    tmp = path.with_name(path.name + ".flat")
    with open(tmp, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


def _table(run, bundle, summary: dict, images: int) -> None:
    """Methods (and baselines) x metrics in the terminal (not with --quiet/--json)."""
    if not run.show_progress:
        return
    from rich.markup import escape
    from rich.table import Table

    from ..figures.evaluate import cell_text, leaders

    table = Table(title=f"evaluate · {bundle.title} · {images} image(s) on {bundle.device}")
    test = next(iter(summary["ranking"].values()))["test"] if summary["ranking"] else "paired test"
    note = f"mean ± half the 95% interval; bold: best, or not significantly worse ({test})"
    best = leaders(summary)
    metrics = summary["metric_names"]
    table.add_column("map")
    for metric in metrics:
        table.add_column(f"{metric} {'↑' if METRICS[metric][1] else '↓'}", justify="right")
    for name, per in summary["metrics"].items():
        row = [name if name in summary["methods"] else f"[dim]{name}[/dim]"]
        for metric in metrics:
            text = cell_text(per[metric])
            row.append(f"[bold]{text}[/bold]" if name in best.get(metric, ()) else text)
        table.add_row(*row)
    out_console.print(table)
    out_console.print(f"[dim]{escape(note)}[/dim]")  # below the table, at the terminal's width (a caption wraps to the table's)
