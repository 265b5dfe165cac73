"""`deepprobe invert`: reconstruct photos from a layer's features, with a captioned grid and measured errors."""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import DeepprobeError
from ..options.invert import DEFAULT_LAYERS, Options
from . import app
from .common import command, err_console, opt, out_console

ERROR_MEASURE = "||phi(x) - phi0|| / ||phi0|| at the layer (not squared), by a fresh forward pass"


@command(app, "invert")
def invert_cmd(run, images: list[str] = typer.Argument(..., help="Photos to reconstruct (files, folders or globs)."),
               layer: list[str] = opt(Options, "layer", help="Layer whose features are matched; repeat for several "
                                                             "(see `deepprobe layers`); default "
                                                             f"{', '.join(DEFAULT_LAYERS)}."),
               steps: int = opt(Options, "steps", help="Adam steps."),
               lr: str = opt(Options, "lr", help="First Adam step in pixel units; decays along a cosine to 1%."),
               tv: str = opt(Options, "tv", help="Weight of the total-variation prior (lambda_TV, normalized as "
                                                 "in the paper)."),
               beta: str = opt(Options, "beta", help="TV exponent (2 avoids spikes)."),
               alpha_weight: str = opt(Options, "alpha_weight", help="Weight of the alpha-norm prior "
                                                                     "(lambda_alpha)."),
               alpha: str = opt(Options, "alpha", help="Exponent of the alpha-norm prior."),
               noise: str = opt(Options, "noise", help="Half-width of the uniform noise around mid-grey the "
                                                       "reconstruction starts from."),
               levels: int = opt(Options, "levels", help="Pyramid levels of the image being optimized (each half "
                                                         "the size; 1 = plain pixels)."),
               size: int = opt(Options, "size", help="Longest side of the working image (default: the model's "
                                                     "input size)."),
               batch_size: int = opt(Options, "batch_size", help="Most photo x layer pairs optimized together.")):
    """Reconstruct each photo from the features of one or more layers (Mahendran & Vedaldi 2015).

    Starts from noise. Writes NAME_invert_LAYER.png per layer, NAME_invert_grid.png (original | layers, shallow
    to deep, each captioned with the relative feature error reached) and JSON sidecars."""
    from .inputs import batches, image_paths

    opts = run.options  # numbers already checked against their ranges (options/invert.py)
    if not opts.layer:
        raise DeepprobeError("give at least one --layer")
    bundle = run.bundle()
    opts.layer = run.layers_for(opts.layer, DEFAULT_LAYERS)
    for name in opts.layer:
        bundle.layer(name)  # unknown layers fail here, once, with suggestions
    paths = image_paths(run, images)
    loaded = list(batches(run, bundle, paths, len(paths)))  # one batch; unreadable photos are recorded as failed
    if not loaded:
        return run.finish()
    paths, photos = loaded[0]
    result = _invert(run, bundle, photos, opts)
    records = [_save(run, bundle, path, i, result, opts) for i, path in enumerate(paths)]
    run.summary["relative_feature_error"] = {
        name: round(float(result.errors[name].mean()), 5) for name in result.layers}
    run.summary["error_measure"] = ERROR_MEASURE
    _show(run, bundle, records)
    code = run.finish()
    return 130 if result.stopped == "interrupted" else code


def _invert(run, bundle, photos, opts: Options):
    from ..techniques.invert import invert
    from .progress import engine_callback

    rows = photos.shape[0] * len(dict.fromkeys(opts.layer))
    total = opts.steps * -(-rows // opts.batch_size)
    with run.progress() as progress:
        task = progress.add_task("invert", total=total, info=f"{rows} reconstruction(s)")
        callback = engine_callback(progress, task, bundle, prefix=f"{rows} reconstruction(s)")
        result = invert(bundle, photos, opts.layer, steps=opts.steps, lr=opts.lr, tv=opts.tv, beta=opts.beta,
                        alpha_weight=opts.alpha_weight, alpha=opts.alpha, noise=opts.noise,
                        levels=opts.levels, size=opts.size,
                        batch_size=opts.batch_size, seed=run.common.seed, callback=callback)
        progress.update(task, completed=result.steps)
    if result.stopped == "interrupted":
        err_console.print("[yellow]interrupted; saved the best reconstructions so far[/yellow]")
    elif result.stopped == "nan":
        err_console.print(f"[yellow]{result.message}[/yellow]")
    return result


def _save(run, bundle, path: Path, i: int, result, opts: Options) -> dict:
    """One photo's reconstructions, its grid and its record (errors per layer, shallow to deep)."""
    from ..figures.synthesis import invert_grid
    from ..io import safe_stem
    from ..techniques.invert import pixel_correlation

    stem = safe_stem(path)
    original = result.originals[i:i + 1]
    h, w = original.shape[-2:]
    errors = {name: round(float(result.errors[name][i]), 5) for name in result.layers}
    record = {
        "input": str(path), "size": [int(h), int(w)], "layers": list(result.layers),
        "relative_feature_error": errors, "error_measure": ERROR_MEASURE,
        "start_feature_error": {name: round(float(result.start_errors[name][i]), 5) for name in result.layers},
        "pixel_correlation": {name: round(float(pixel_correlation(result.images[name][i:i + 1], original)[0]), 4)
                              for name in result.layers},
        "pixel_correlation_start": round(float(pixel_correlation(result.start[i:i + 1], original)[0]), 4),
        "steps": result.steps, "stopped": result.stopped,
        "regularizers": {"tv": opts.tv, "beta": opts.beta, "alpha_weight": opts.alpha_weight, "alpha": opts.alpha},
    }
    outputs = {}
    for name in result.layers:
        out = run.save_image(result.images[name][i:i + 1], f"{stem}_invert_{_slug(name)}.png",
                             result={"input": str(path), "layer": name, "relative_feature_error": errors[name],
                                     "error_measure": ERROR_MEASURE,
                                     "start_feature_error": record["start_feature_error"][name],
                                     "pixel_correlation": record["pixel_correlation"][name],
                                     "loss_curve": [round(v, 5) for v in result.losses]})
        outputs[name] = str(out)
    title = f"{path.name} · inverted from {bundle.title} · {result.steps} steps"
    picture = invert_grid(original, {n: result.images[n][i:i + 1] for n in result.layers}, errors, result.layers,
                          title)
    grid_path = run.save_image(picture, f"{stem}_invert_grid.png", result={**record, "outputs": outputs,
                                                                           "grid": True})
    record.update(outputs=outputs, grid=str(grid_path))
    run.add_result(record)
    return record


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name.strip()) or "layer"


def _show(run, bundle, records: list[dict]) -> None:
    if not run.show_progress or not records:
        return
    from rich.table import Table

    layers = records[0]["layers"]
    table = Table(title=f"invert · {bundle.title} · relative feature error (not squared)")
    for column in ["image", *layers, "grid"]:
        table.add_column(column)
    for r in records:
        table.add_row(Path(r["input"]).name, *[f"{r['relative_feature_error'][n]:.3f}" for n in layers],
                      Path(r["grid"]).name)
    out_console.print(table)
