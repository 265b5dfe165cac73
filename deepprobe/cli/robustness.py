"""`deepprobe robustness DATA`: accuracy under attack over a data set; resumable, and sharded under torchrun.

The data layer (deepprobe.data) streams the images and keeps the run folder; techniques/robustness.py attacks
each batch and sums up. This module wires them to the command line: options, the progress bar, notes, example
panels, the plot, the table and `--resume`.
"""
from __future__ import annotations

import math
from pathlib import Path

import typer

from ..errors import DeepprobeError
from ..options.attacks import ATTACK_NAMES, CASCADES, NORMS
from ..options.robustness import DEFAULT_EPS, Options, auto_pool
from . import app
from .common import command, err_console, opt, out_console

EXAMPLES = "examples"
PLOT = "robustness_accuracy.png"
# what may be typed with --resume (everything else comes from the stored run)
_RESUME_OVERRIDES = ("workers", "rank_timeout", "device", "json", "quiet", "debug", "out", "resume")


@command(app, "robustness")
def robustness_cmd(run, ctx: typer.Context,
                   data: list[str] = typer.Argument(None, help="A folder of class folders (named by class name, "
                                                               "index or WordNet id), a .csv/.jsonl manifest "
                                                               "(path,label), or image files/folders/globs "
                                                               "(labels: the model's own predictions)."),
                   attack: list[str] = opt(Options, "attack", "--attack", "-a",
                                           help="Attack or cascade, run in order on the images still robust; "
                                                f"repeat for several: {', '.join([*CASCADES, *ATTACK_NAMES])} "
                                                "\\[default: autoattack = apgd-ce, apgd-t, fab-t, square]."),
                   eps: list[str] = opt(Options, "eps", help="Budget, e.g. 4/255; repeat for several (0 = clean). "
                                                             f"\\[default: {DEFAULT_EPS['linf'] * 255:g}/255 for "
                                                             f"linf, {DEFAULT_EPS['l2']:g} for l2]"),
                   norm: str = opt(Options, "norm", help=f"Threat model: {' | '.join(NORMS)}."),
                   steps: int = opt(Options, "steps", help="Iterations of each gradient attack (apgd-*, fab-t)."),
                   restarts: int = opt(Options, "restarts", help="Random restarts for images still robust."),
                   targets: int = opt(Options, "targets", help="Target classes of apgd-t and fab-t."),
                   queries: int = opt(Options, "queries", help="Queries per image of square."),
                   batch_size: int = opt(Options, "batch_size", help="Images per forward pass of the attacks."),
                   pool: int = opt(Options, "pool", help="Batches attacked together: after each attack the images "
                                                         "still robust are regrouped into full batches (memory "
                                                         "holds pool x batch-size images and their attack state). "
                                                         "Also what a crash can lose at most. Default: by the "
                                                         "image size, 16 batches for 32-64 px, 8 for 224 px, "
                                                         "fewer above."),
                   save_examples: int = opt(Options, "save_examples", help="Panels (original | perturbation | "
                                                                           "adversarial) of images broken."),
                   limit: int = opt(Options, "limit", help="Only the first N images (after --sample)."),
                   sample: int = opt(Options, "sample", help="A fixed random subset of N images, chosen with "
                                                             "--seed."),
                   workers: int = opt(Options, "workers", help="DataLoader processes reading images ahead."),
                   rank_timeout: float = opt(Options, "rank_timeout",
                                             help="torchrun: seconds a rank may go without progress (or 2 minutes "
                                                  "without a heartbeat) before the others stop waiting for it and "
                                                  "the run ends, finished batches kept."),
                   resume: bool = typer.Option(False, "--resume", help="Continue the run stored in --out with its "
                                                                       "own data and options (running the same "
                                                                       "command again does the same)."),
                   depth_maps: str = typer.Option(None, "--depth-maps", help="Depth estimators: a folder of "
                                                  "ground-truth depth maps named like the images (STEM.npy or a "
                                                  "16-bit STEM.png); AbsRel is then against them, not against "
                                                  "the clean prediction.")):
    """Measure accuracy under attack on a data set, image by image, checked on the 8-bit images.

    --out is the run folder: results.jsonl (one line per image), summary.json (accuracies with Wilson 95%
    intervals, per eps and per attack of the cascade), robustness_accuracy.png and examples/. Every finished
    batch is on disk at once: after Ctrl-C or a crash, the same command (or --resume) skips what is done. A
    different configuration into the same --out is refused (--force replaces it). Runs unchanged under
    `torchrun --nproc-per-node K deepprobe robustness ...`: each rank takes a fixed share, rank 0 merges.

    On a depth estimator: PGD (--eps, --norm, --steps) pushes each prediction away from the clean one, and
    summary.json gives the mean AbsRel (95% interval) per eps against the clean prediction or --depth-maps;
    robustness_depth.png plots it. Photos of different sizes need --batch-size 1."""
    if resume:
        return _resume(run, ctx, data)
    if not data:
        raise DeepprobeError("give DATA: a folder of class folders, a .csv/.jsonl manifest, or image files")
    return _measure(run, data, run.options, depth_maps)


def _measure(run, data: list[str], opts: Options, depth_maps: str | None = None) -> int:
    from ..data import open_dataset, select
    from ..data.runner import Hooks, run_dataset
    from ..models.bundle import require_classifier
    from ..techniques.robustness import BatchAttack, make_plan
    from .ranks import ranked, skip_note

    plan = make_plan(opts.attack, opts.eps, opts.norm, opts.steps, opts.restarts, opts.targets, opts.queries)
    with ranked(run, opts.rank_timeout) as ctx:
        bundle = run.bundle()
        if bundle.task == "depth":
            from .robustness_depth import measure_depth

            return measure_depth(run, ctx, bundle, data, opts, depth_maps)
        if depth_maps is not None:
            raise DeepprobeError(f"--depth-maps applies to depth estimators; {bundle.spec} is a {bundle.task} model")
        require_classifier(bundle, "robustness")
        dataset = select(open_dataset(data, bundle.labels, bundle.num_classes, bundle.spec),
                         limit=opts.limit, sample=opts.sample, seed=run.common.seed)
        _notes(run, dataset)
        config = _config(run, bundle, dataset, plan, opts)
        with run.progress() as progress:
            bar = _Bar(run, progress, plan)
            attack = BatchAttack(bundle, plan, keep_images=opts.save_examples > 0, callback=bar.stage,
                                 batch_size=opts.batch_size)
            examples = _Examples(run, bundle, plan, attack, opts.save_examples, ctx.world)
            outcome = run_dataset(dataset, attack, batch_size=opts.batch_size, seed=run.common.seed,
                                  out=run.out_dir, config=config, force=run.common.force,
                                  preprocess=bundle.preprocess, workers=opts.workers, ctx=ctx,
                                  hooks=Hooks(start=bar.start, progress=bar.advance, skip=skip_note(ctx),
                                              chunk_done=examples.save, stats=attack.stats),
                                  also_remove=(EXAMPLES,), invocation=run.record(),
                                  pool=opts.pool or auto_pool(bundle.input_size, opts.batch_size))
        # every session of a resumed run shares the first one's id, so `deepprobe report` shows one run
        run.run_id = (outcome.folder.stored_invocation() or {}).get("run_id", run.run_id)
        if not ctx.is_main:
            return run.finish()
        return _report(run, bundle, dataset, plan, config, outcome, ctx)


def _config(run, bundle, dataset, plan, opts: Options) -> dict:
    """Everything that changes a per-image result or which images are measured (the resume fingerprint)."""
    return {"command": "robustness", **run.model_config(), "amp": bool(bundle.notes.get("amp")), "data": dataset.describe(),
            "limit": opts.limit, "sample": opts.sample, "seed": run.common.seed, "batch_size": opts.batch_size,
            **plan.describe()}


def _notes(run, dataset) -> None:
    from ..data import PREDICTIONS

    notes = list(dataset.notes)
    if dataset.labeling == PREDICTIONS:
        notes.append("DATA has no labels: the model's own clean predictions stand in, so the figures are "
                     "prediction robustness (how many predictions an attack cannot change), not accuracy")
    if not run.common.quiet:  # also with --json: the notes go to stderr
        for note in notes:
            err_console.print(f"[yellow]note:[/yellow] {note}")


class _Bar:
    """One bar over this rank's images; its text follows the attack running on the current batch."""

    def __init__(self, run, progress, plan):
        self.run, self.progress, self.plan = run, progress, plan
        self.task = None

    def start(self, total: int, done_before: int) -> None:
        if done_before and self.run.show_progress:
            err_console.print(f"[dim]resuming: {done_before} image(s) already done in this folder[/dim]")
        self.task = self.progress.add_task("robustness", total=max(total, 1), info=", ".join(self.plan.cascade))

    def stage(self, state) -> None:
        """robust_batch's StageProgress: which attack at which eps, its steps, images of the batch still robust."""
        eps = f"{state.eps * 255:g}/255" if self.plan.settings.norm == "linf" else f"{state.eps:g}"
        self.progress.update(self.task, info=f"{state.attack} at {eps}: step {state.step}/{state.steps} · "
                                             f"{state.robust} robust in pool")

    def advance(self, images: int) -> None:
        self.progress.advance(self.task, images)


class _Examples:
    """Panels of broken images, saved as each batch is stored (a resumed run adds to the ones there)."""

    def __init__(self, run, bundle, plan, attack, wanted: int, world: int):
        folder = run.out_dir / EXAMPLES
        present = len(list(folder.glob("*_panel.png"))) if folder.is_dir() else 0
        self.left = math.ceil(max(0, wanted - present) / world)  # each rank's share
        self.run, self.bundle, self.plan, self.attack = run, bundle, plan, attack

    def save(self, batch, records: list[dict]) -> None:
        if self.left <= 0 or batch.chunk not in self.attack.kept:
            return
        from ..io import safe_stem
        from ..figures.fool import perturbation_tile
        from ..render import panel

        clean, adversarial = self.attack.kept[batch.chunk]
        for i, record in enumerate(records):
            broken = [k for k in self.plan.keys if record["clean_correct"] and not record["eps"][k]["robust"]]
            if not broken or self.left <= 0:
                continue
            key = broken[0]  # the smallest budget that broke it
            entry = record["eps"][key]
            original, adv = clean[i].cpu(), adversarial[key][i].cpu()
            stem = f"{record['index']:06d}_{safe_stem(record['path']) if record['path'] else 'image'}"
            name = f"{EXAMPLES}/{stem}_eps{_eps_text(entry, key, self.plan)}"
            saved = self.run.save_image(adv, f"{name}.png", replace=True,
                                        result={"input": record["path"], "label": record["label_name"],
                                                "final_class": entry["final_name"], "broken_by": entry["broken_by"],
                                                "eps": key, "linf": entry["linf"], "l2": entry["l2"]})
            middle, scale = perturbation_tile(original, adv, float(entry["linf"]))
            tiles = [original, middle, adv]
            captions = [f"label {record['label_name']} · model: {record['clean_pred_name']}",
                        f"perturbation x{scale:g}\nL-inf {entry['linf'] * 255:.3g}/255 · L2 {entry['l2']:.3f}",
                        f"{entry['final_name']} (by {entry['broken_by']})"]
            title = (f"{Path(record['path']).name if record['path'] else record['index']} · "
                     f"eps {_eps_text(entry, key, self.plan).replace('-', '/')} · {self.plan.settings.norm}")
            self.run.save_image(panel(tiles, captions, cell=int(original.shape[-1]), title=title),
                                f"{name}_panel.png", replace=True, result={"adversarial": str(saved)})
            self.left -= 1


def _eps_text(entry: dict, key: str, plan) -> str:
    eps = plan.eps[plan.keys.index(key)]
    return f"{eps * 255:g}-255" if plan.settings.norm == "linf" else f"{eps:g}"


def _report(run, bundle, dataset, plan, config, outcome, ctx) -> int:
    """Rank 0, after the merge: the summary (file, --json), the plot and the table."""
    from ..techniques.robustness import Tally, occupancy_summary
    from ..figures.robustness import robustness_title
    from .dataset_summary import publish_summary
    from ..techniques.robustness_plot import accuracy_plot

    tally = Tally(plan, dataset.labeling)
    for record in outcome.records():
        tally.add(record)
    summary = tally.summary()
    summary.update(occupancy_summary(outcome.stats, config["batch_size"]))
    config = {**config, "pool": outcome.pool}
    seconds = sum(v["attack_seconds"] for v in summary["per_eps"].values())
    summary.update(
        images_selected=len(dataset.items), skipped=outcome.skipped, n_skipped=len(outcome.skipped),
        complete=outcome.complete, done_before=outcome.done_before, processed_now=outcome.processed,
        wall_s=round(outcome.wall_s, 3),
        images_per_s=round(outcome.processed / outcome.wall_s, 4) if outcome.wall_s > 0 else None,
        attack_seconds_per_image=round(seconds / summary["n"], 4) if summary["n"] else None,
        world_size=ctx.world, ranks=outcome.ranks, device=str(bundle.device), config=config)
    plots = []
    if summary["n"]:
        shown = ("n", "labels", "measure", "clean_accuracy", "robust_accuracy", "stage_accuracy", "ci95", "per_eps",
                 "complete", "n_skipped")
        plots.append(run.save_image(accuracy_plot(dict(summary), title=robustness_title(bundle.title, summary)), PLOT,
                                    replace=True, result={**{k: summary[k] for k in shown}, "norm": plan.settings.norm}))
    earlier = sorted((run.out_dir / EXAMPLES).glob("*.png"))  # from this and earlier sessions of the run
    publish_summary(run, outcome, summary, plots + [p for p in earlier if p.name.endswith("_panel.png")], earlier)
    _table(run, bundle, summary, plan)
    if not outcome.complete:
        left = summary["images_selected"] - summary["n"] - summary["n_skipped"]
        err_console.print(f"[yellow]interrupted:[/yellow] {left} image(s) left; run the same command again "
                          f"(or `deepprobe robustness --resume --out {run.out_dir}`) to go on")
        run.finish()
        return 130
    return run.finish()


def _table(run, bundle, summary: dict, plan) -> None:
    if not run.show_progress:
        return
    from rich.table import Table

    def pct(value, bounds) -> str:
        return "" if value is None else f"{value:.1%} [dim]({bounds[0]:.0%}–{bounds[1]:.0%})[/dim]"

    measure = "prediction robustness" if summary["labels"] == "predictions" else "accuracy"
    table = Table(title=f"robustness · {bundle.title} · {summary['n']} images on {bundle.device}")
    table.add_column("eps")
    for stage in plan.stages:
        table.add_column(f"after {stage}", justify="right")
    linf = plan.settings.norm == "linf"
    table.add_column("robust", justify="right")
    table.add_column(f"median {'L-inf' if linf else 'L2'} of breaks", justify="right")
    for key, eps in zip(plan.keys, plan.eps):
        stages = summary["stage_accuracy"][key]
        median = summary["per_eps"][key]["median_linf" if linf else "median_l2"]
        shown = "–" if median is None else f"{median * 255:.3g}/255" if linf else f"{median:.3g}"
        table.add_row(f"{eps * 255:g}/255" if linf else f"{eps:g}",
                      *[f"{stages[s]:.1%}" if stages[s] is not None else "" for s in plan.stages],
                      pct(summary["robust_accuracy"][key], summary["ci95"]["robust_accuracy"][key]), shown)
    out_console.print(table)
    # below the table at the terminal's width (a caption would wrap to the table's)
    out_console.print(f"{measure}, Wilson 95% interval in brackets; clean: "
                      f"{pct(summary['clean_accuracy'], summary['ci95']['clean_accuracy'])}")
    rate = f" · {summary['images_per_s']:.3g} images/s" if summary.get("images_per_s") else ""
    out_console.print(f"[dim]{summary['n_skipped']} skipped · {summary['wall_s']:.1f} s{rate} · "
                      f"{run.out_dir / 'summary.json'}[/dim]")


def _resume(run, ctx: typer.Context, data: list[str] | None) -> int:
    """Re-run the command stored in --out (its data and options), which skips everything finished."""
    from ..data.store import RunFolder
    from .rerun import rerun

    invocation = RunFolder(run.out_dir).stored_invocation()
    if invocation is None:
        raise DeepprobeError(f"--resume: {run.out_dir} holds no robustness run to resume (no config.json)")
    typed = [name for name in ctx.params if name not in _RESUME_OVERRIDES
             and ctx.get_parameter_source(name).name == "COMMANDLINE"]
    if data or typed:
        given = ", ".join(["DATA"] * bool(data) + [f"--{n.replace('_', '-')}" for n in typed])
        raise DeepprobeError(f"--resume continues the run in {run.out_dir} with its own data and options; "
                             f"drop {given} (or run the full command again)")
    extra = ["--workers", str(run.options.workers)] \
        if ctx.get_parameter_source("workers").name == "COMMANDLINE" else []
    device = run.common.device if ctx.get_parameter_source("device").name == "COMMANDLINE" else None
    return rerun(app, invocation, out=str(run.out_dir), device=device, extra=extra, json_summary=run.common.json,
                 quiet=run.common.quiet, debug=run.common.debug)
