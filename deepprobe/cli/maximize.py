"""`deepprobe maximize`: images that drive a class, channels or a neuron, with a captioned grid and measured JSON."""
from __future__ import annotations

from pathlib import Path

from ..errors import DeepprobeError
from ..options.maximize import Options
from . import app
from .common import command, err_console, opt, out_console

REPO_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"  # a source checkout's photos, if present


@command(app, "maximize")
def maximize_cmd(run,
                 target: list[str] = opt(Options, "target", help="Class to maximize (name or index); repeat "
                                                                 "for several."),
                 layer: str = opt(Options, "layer", help="Layer whose channels --channel picks (see "
                                                         "`deepprobe layers`)."),
                 channel: list[str] = opt(Options, "channel", help="Channel index or range (12, 0-7, 0,3,5); "
                                                                   "repeat for several."),
                 neuron: str = opt(Options, "neuron", help="Maximize one cell Y,X of each channel's map (at "
                                                           "--size) instead of its mean; 'centre' for the middle."),
                 steps: int = opt(Options, "steps", help="Adam steps."),
                 lr: str = opt(Options, "lr", help="Adam learning rate on the Fourier coefficients."),
                 size: int = opt(Options, "size", help="Side of the square result in pixels."),
                 decay_power: str = opt(Options, "decay_power", help="Spectrum decay 1/f^p: higher is "
                                                                     "smoother."),
                 robustness: str = opt(Options, "robustness", help="Strength of the random pad/jitter/scale/"
                                                                   "rotate each step sees (0 = off)."),
                 photos: str = opt(Options, "photos", help="Photos (folder, file or glob) whose best "
                                                           "activation of each unit is reported; 'none' to skip."),
                 columns: int = opt(Options, "columns", help="Grid columns (0: up to 8 per row).")):
    """Find an image that maximally drives a class, a channel or a neuron.

    A unit is a class logit (--target), a channel's mean (--layer --channel) or one cell of it (--neuron).
    All units run as one batch. Writes one PNG per unit,
    maximize_grid.png (captioned: activation reached and the photos' best) and JSON sidecars."""
    opts = run.options
    _check(opts)
    bundle = run.bundle()
    from ..models.tasks import CLASSIFICATION, EMBEDDING, require_task
    from ..techniques.maximize import maximize, resolve_units

    # its photos' best batches photos of one size; an embedder's channels need no classes
    require_task(bundle, "maximize", CLASSIFICATION, EMBEDDING)
    from ..techniques.maximize import native_side

    opts.size = opts.size or native_side(bundle)

    units = resolve_units(bundle, opts.target or None, opts.layer, opts.channel or None, opts.neuron, opts.size)
    photo_paths, photo_batch = _photos(run, bundle, opts.photos)
    from .progress import engine_callback

    with run.progress() as progress:
        task = progress.add_task("maximize", total=opts.steps, info=f"{len(units)} unit(s)")
        callback = engine_callback(progress, task, bundle, prefix=f"{len(units)} unit(s)")
        result = maximize(bundle, units=units, steps=opts.steps, lr=opts.lr, size=opts.size,
                          decay_power=opts.decay_power, robustness=opts.robustness, seed=run.common.seed,
                          photos=photo_batch, photo_names=[p.name for p in photo_paths], callback=callback)
    if result.stopped == "interrupted":
        err_console.print("[yellow]interrupted; saved the images so far[/yellow]")
    elif result.stopped == "nan":
        err_console.print("[yellow]the loss became NaN; saved the last good images[/yellow]")
    records = _save(run, bundle, opts, result, photo_paths)
    _show(run, bundle, records)
    run.summary.update(measure={
        "activation": "class: logit; channel: mean over the map; neuron: the cell at (Y,X) of the result",
        "photos": ("each photo via the model's preprocessing, resized to --size; the same reading, except a "
                   "neuron reads its channel's largest cell anywhere in the map"),
        "photos_used": [str(p) for p in photo_paths]})
    code = run.finish()
    return 130 if result.stopped == "interrupted" else code


def _check(opts: Options) -> None:
    """Option values a user can get wrong, reported before any model is loaded."""
    if opts.robustness < 0 or opts.decay_power < 0:
        raise DeepprobeError("--robustness and --decay-power must be 0 or more")
    if opts.columns < 0:
        raise DeepprobeError(f"--columns must be 0 or more, got {opts.columns}")
    if not opts.target and not opts.channel:
        raise DeepprobeError("nothing to maximize: give --target CLASS, or --layer L --channel K "
                             "(optionally --neuron Y,X)")


def _photos(run, bundle, spec: str):
    """The comparison photos as one batch at the model's input size (none: empty list, None)."""
    import torch

    from ..errors import ImageError
    from ..io import find_images

    if spec.strip().lower() == "none":
        return [], None
    paths, _problems = find_images([spec])
    if not paths and spec == Options.photos and REPO_EXAMPLES.is_dir():
        paths, _problems = find_images([str(REPO_EXAMPLES)])
    loaded, used = [], []
    for path in paths:
        try:
            loaded.append(bundle.load_image(path))
            used.append(path)
        except ImageError as exc:
            err_console.print(f"[yellow]skipping comparison photo {path}: {exc}[/yellow]")
    if not loaded:
        err_console.print(f"[yellow]no comparison photos found at {spec!r}; reporting activations alone "
                          "(--photos DIR)[/yellow]")
        return [], None
    return used, torch.cat(loaded)


def _save(run, bundle, opts: Options, result, photo_paths) -> list[dict]:
    """One PNG per unit, the captioned grid, and the records in the --json summary."""
    from ..figures.synthesis import maximize_grid

    records = result.records()
    common = {"size": opts.size, "steps": result.steps, "stopped": result.stopped}
    for i, rec in enumerate(records):
        out = run.save_image(result.images[i:i + 1], f"maximize_{_slug(result.units[i].key, rec)}.png",
                             result={**rec, **common})
        rec["output"] = str(out)
    title = f"maximize · {bundle.title} · {opts.size}px · {result.steps} steps"
    picture = maximize_grid(result.images, records, opts.size, title, opts.columns)
    grid_path = run.save_image(picture, "maximize_grid.png",
                               result={"units": records, **common, "photos": [str(p) for p in photo_paths],
                                       "loss_curve": [round(v, 4) for v in result.losses]})
    for rec in records:
        rec["grid"] = str(grid_path)
        run.add_result(rec)
    return records


def _slug(key: str, rec: dict) -> str:
    name = key + (f"_{rec['class']}" if rec.get("class") else "")
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _show(run, bundle, records: list[dict]) -> None:
    if not run.show_progress or not records:
        return
    from rich.table import Table

    table = Table(title=f"maximize · {bundle.title} on {bundle.device}")
    for column in ("unit", "reached", "photos best", "best photo", "ratio", "output"):
        table.add_column(column)
    for r in records:
        ratio = r.get("ratio")
        table.add_row(r["unit"], f"{r['activation']:.3f}",
                      f"{r['natural_best']:.3f}" if "natural_best" in r else "-", r.get("natural_photo", "-"),
                      f"{ratio:.2f}x" if ratio is not None else "-", Path(r["output"]).name)
    out_console.print(table)
