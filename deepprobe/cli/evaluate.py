"""`deepprobe evaluate`: are the explanations faithful? Deletion/insertion AUCs vs baselines, and a sanity check."""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import DeepprobeError
from ..options.evaluate import DEFAULT_METHODS, FILLS, Options
from . import app
from .common import command, opt, out_console
from .prompts import apply_prompts, labels_option, text_option


@command(app, "evaluate")
def evaluate_cmd(run, images: list[str] = typer.Argument(..., help="Photos to explain and evaluate (files, "
                                                                   "folders or globs)."),
                 method: list[str] = opt(Options, "method", "--method", "-M",
                                         help=f"Explanation method; repeat for several (default "
                                              f"{', '.join(DEFAULT_METHODS)}; see `deepprobe explain --help`)."),
                 target: str = opt(Options, "target", help="Class to explain (name or index); default: each "
                                                           "photo's predicted class."),
                 layer: str = opt(Options, "layer", help="Layer for CAM methods (see `deepprobe layers`)."),
                 steps: int = opt(Options, "steps", help="Deletion/insertion steps (each moves 1/steps of the "
                                                         "pixels)."),
                 batch_size: int = opt(Options, "batch_size", help="Photos per chunk and images per forward pass."),
                 deletion_fill: str = opt(Options, "deletion_fill", help=f"What deleted pixels become: "
                                                                         f"{' | '.join(FILLS)}."),
                 insertion_fill: str = opt(Options, "insertion_fill", help=f"The canvas pixels are inserted "
                                                                           f"into: {' | '.join(FILLS)}."),
                 random_cell: int = opt(Options, "random_cell", help="Cell size (px) of the random baseline map "
                                                                     "(1 = per-pixel noise)."),
                 curves: bool = opt(Options, "curves", "--curves/--no-curves",
                                    help="Deletion and insertion curves (--no-curves: sanity check only)."),
                 sanity: bool = opt(Options, "sanity", "--sanity/--no-sanity",
                                    help="Cascading model-parameter randomization check."),
                 text: list[str] = text_option(), labels: str = labels_option()):
    """Measure whether explanation maps are faithful (deletion/insertion curves, sanity check).

    Deletion and insertion curves (RISE) of each method against a random and an edge-detector map, and the
    model-parameter randomization sanity check (Adebayo et al.). On CLIP the classes are the --text/--labels
    prompts.
    Writes evaluate_curves.png, evaluate_sanity.png and JSON sidecars with every number; prints a table."""
    from ..explain.evaluate import BASELINES, check_options, evaluate, evaluation_methods, work_per_image
    from ..models.bundle import require_classifier
    from .inputs import batches, image_paths

    opts = run.options
    methods = evaluation_methods(opts.method or DEFAULT_METHODS)  # unknown methods fail before the model loads
    check_options(opts.deletion_fill, opts.insertion_fill, opts.curves, opts.sanity)
    bundle = run.bundle()
    apply_prompts(run, bundle, text, labels)
    require_classifier(bundle, "evaluate")
    target = bundle.class_index(opts.target) if opts.target is not None else None
    if opts.layer is not None:
        bundle.layer(opts.layer)
    paths = image_paths(run, images)
    per_image = work_per_image(bundle, methods, opts.steps, opts.curves, opts.sanity)
    records, chunks = [], []
    with run.progress() as progress:
        task = progress.add_task("evaluate", total=per_image * len(paths), info="")
        done = 0
        for chunk_paths, x in batches(run, bundle, paths, opts.batch_size):
            progress.update(task, info=f"{done + 1}-{done + len(chunk_paths)}/{len(paths)} "
                                       f"{', '.join(p.name for p in chunk_paths[:2])}")
            result = evaluate(bundle, x, methods, target=target, layer=opts.layer, steps=opts.steps,
                              batch_size=opts.batch_size, deletion_fill=opts.deletion_fill,
                              insertion_fill=opts.insertion_fill, random_cell=opts.random_cell,
                              curves=opts.curves, sanity=opts.sanity, seed=run.common.seed,
                              callback=lambda k: progress.advance(task, k))
            records += _records(bundle, chunk_paths, result)
            chunks.append(result)
            done += len(chunk_paths)
    if not records:
        raise DeepprobeError("no photo could be evaluated")
    summary = _summary(chunks, methods, BASELINES)
    name = f"{records[0]['input_stem']}_evaluate" if len(records) == 1 else "evaluate"
    for r in records:
        r.pop("input_stem")
    info = dict(model=bundle.spec, photos=len(records), methods=methods, settings=chunks[0].settings)
    if opts.curves:
        image = _curves_image(bundle, summary, len(records), opts)
        path = run.save_image(image, f"{name}_curves.png", result={**info, "fractions": summary["fractions"],
                                                                      "summary": summary["curves"], "images": records})
        summary["curves_plot"] = str(path)
    if opts.sanity:
        image = _sanity_image(bundle, summary, len(records))
        sanity_records = [{k: r[k] for k in ("input", "target", "sanity") if k in r} for r in records]
        path = run.save_image(image, f"{name}_sanity.png", result={**info, "summary": summary["sanity"],
                                                                      "images": sanity_records})
        summary["sanity_plot"] = str(path)
    for r in records:
        run.add_result(r)
    run.summary["evaluation"] = summary
    _table(run, bundle, summary, methods, BASELINES, len(records))


def _records(bundle, paths: list[Path], result) -> list[dict]:
    """One JSON-ready record per photo: target, clean probability, AUCs, curves, sanity correlations."""
    from ..io import safe_stem

    out = []
    for i, path in enumerate(paths):
        r = {"input": str(path), "input_stem": safe_stem(path), "target": bundle.class_name(int(result.targets[i])),
             "target_index": int(result.targets[i]), "probability": round(float(result.probabilities[i]), 6)}
        if result.deletion:
            r["deletion_auc"] = {k: round(float(v[i]), 5) for k, v in result.deletion_auc.items()}
            r["insertion_auc"] = {k: round(float(v[i]), 5) for k, v in result.insertion_auc.items()}
            r["deletion_curve"] = {k: [round(float(p), 6) for p in v[i]] for k, v in result.deletion.items()}
            r["insertion_curve"] = {k: [round(float(p), 6) for p in v[i]] for k, v in result.insertion.items()}
        if result.sanity:
            r["sanity"] = {"layers": result.sanity_layers,
                           **{k: [round(float(c), 5) for c in v[i]] for k, v in result.sanity.items()}}
        out.append(r)
    return out


def _summary(chunks: list, methods: list[str], baselines) -> dict:
    """Means over every photo of every chunk (curves, AUCs, sanity), as plain numbers."""
    import torch

    first = chunks[0]
    summary: dict = {"fractions": [round(float(f), 6) for f in first.fractions]}
    if first.deletion:
        names = [*methods, *baselines]
        cat = {key: {n: torch.cat([getattr(c, key)[n] for c in chunks]) for n in names}
               for key in ("deletion", "insertion", "deletion_auc", "insertion_auc")}
        summary["curves"] = {
            n: {"deletion_auc": round(float(cat["deletion_auc"][n].mean()), 5),
                "insertion_auc": round(float(cat["insertion_auc"][n].mean()), 5),
                "deletion_curve": [round(float(v), 6) for v in cat["deletion"][n].mean(0)],
                "insertion_curve": [round(float(v), 6) for v in cat["insertion"][n].mean(0)],
                **({"deletion_beats_random": int((cat["deletion_auc"][n] < cat["deletion_auc"]["random"]).sum()),
                    "insertion_beats_random": int((cat["insertion_auc"][n] > cat["insertion_auc"]["random"]).sum()),
                    "deletion_beats_edge": int((cat["deletion_auc"][n] < cat["deletion_auc"]["edge"]).sum()),
                    "insertion_beats_edge": int((cat["insertion_auc"][n] > cat["insertion_auc"]["edge"]).sum())}
                   if n in methods else {})}
            for n in names}
    if first.sanity:
        summary["sanity"] = {"layers": first.sanity_layers}
        for n in methods:
            corr = torch.cat([c.sanity[n] for c in chunks])
            summary["sanity"][n] = {"spearman": [round(float(v), 5) for v in corr.mean(0)],
                                    "final_spearman": round(float(corr[:, -1].mean()), 5),
                                    "per_image": [[round(float(v), 4) for v in row] for row in corr]}
    return summary


def _curves_image(bundle, summary: dict, photos: int, opts: Options):
    from ..explain.plots import curves_plot

    curves = summary["curves"]
    return curves_plot(summary["fractions"], {n: c["deletion_curve"] for n, c in curves.items()},
                       {n: c["insertion_curve"] for n, c in curves.items()},
                       {n: c["deletion_auc"] for n, c in curves.items()},
                       {n: c["insertion_auc"] for n, c in curves.items()},
                       title=f"{bundle.spec} · mean of {photos} photo(s) · {opts.steps} steps · deleted -> "
                             f"{opts.deletion_fill}, inserted into {opts.insertion_fill}")


def _sanity_image(bundle, summary: dict, photos: int):
    from ..explain.plots import sanity_plot

    sanity = summary["sanity"]
    methods = [k for k in sanity if k != "layers"]
    return sanity_plot(sanity["layers"], {m: sanity[m]["spearman"] for m in methods},
                       {m: sanity[m]["per_image"] for m in methods},
                       title=f"{bundle.spec} · cascading randomization · mean of {photos} photo(s) (thin: each photo)")


def _table(run, bundle, summary: dict, methods: list[str], baselines, photos: int) -> None:
    """Method and baselines side by side (not with --quiet/--json)."""
    if not run.show_progress:
        return
    from rich.table import Table

    table = Table(title=f"evaluate · {bundle.spec} · {photos} photo(s) on {bundle.device}",
                  caption="photos where the method beats the random/edge baseline; sanity ρ: Spearman with the "
                          "original map once every layer is randomized (near 0 is good)")
    curves, sanity = summary.get("curves"), summary.get("sanity")
    table.add_column("map")
    if curves:
        for column in ("deletion AUC ↓", "< random·edge", "insertion AUC ↑", "> random·edge"):
            table.add_column(column, justify="right")
    if sanity:
        table.add_column("sanity ρ ↓", justify="right")
    for name in [*methods, *baselines]:
        row = [name if name in methods else f"[dim]{name}[/dim]"]
        if curves:
            c = curves[name]
            if name in methods:
                row += [f"{c['deletion_auc']:.3f}", f"{c['deletion_beats_random']}/{photos} · "
                                                    f"{c['deletion_beats_edge']}/{photos}",
                        f"{c['insertion_auc']:.3f}", f"{c['insertion_beats_random']}/{photos} · "
                                                     f"{c['insertion_beats_edge']}/{photos}"]
            else:
                row += [f"{c['deletion_auc']:.3f}", "", f"{c['insertion_auc']:.3f}", ""]
        if sanity:
            row.append(f"{sanity[name]['final_spearman']:.3f}" if name in sanity else "")
        if curves or name in methods:
            table.add_row(*row)
    out_console.print(table)
