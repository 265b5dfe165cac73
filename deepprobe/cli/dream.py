"""`deepprobe dream`: Deep Dream at the photo's own resolution, with a panel and measured results."""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import DeepprobeError
from ..options.dream import DEFAULT_LAYERS, MIN_TILE, Options
from . import app
from .common import command, err_console, opt, out_console


@command(app, "dream")
def dream_cmd(run, images: list[str] = typer.Argument(..., help="Photos to dream on (files, folders or globs)."),
              layer: list[str] = opt(Options, "layer", help="Layer whose activations are amplified; repeat for "
                                                            "several (see `deepprobe layers`); default "
                                                            f"{', '.join(DEFAULT_LAYERS)}."),
              target: str = opt(Options, "target", help="Guided dream: drive this class's logit instead "
                                                        "(name or index)."),
              octaves: int = opt(Options, "octaves", help="Image scales, small to large."),
              octave_scale: str = opt(Options, "octave_scale", help="Size ratio between octaves."),
              steps: int = opt(Options, "steps", help="Gradient steps per octave."),
              lr: str = opt(Options, "lr", help="Step per pixel ([0,1] units) after gradient normalization."),
              strength: str = opt(Options, "strength", help="How much of the dream to lay over the photo "
                                                            "(0 = photo, 1 = full dream, >1 exaggerates)."),
              jitter: int = opt(Options, "jitter", help="Random roll in pixels before each step (undone after)."),
              smooth: str = opt(Options, "smooth", help="Blur of each step's gradient (sigma, pixels); 0 = off."),
              tv: str = opt(Options, "tv", help="Weight of the total-variation prior."),
              tile: int = opt(Options, "tile", help="Largest tile (pixels) a gradient is computed on; bigger "
                                                    "photos are processed in tiles (0 = never tile).")):
    """Deep Dream: amplify what a layer sees (or, with --target, a class) in a photo.

    Works octave by octave, at the photo's own size. Writes NAME_dream.png, NAME_dream_panel.png (input | dream) and JSON sidecars with the layer's
    activation norm before and after (it grows) and how well the photo's layout is kept."""
    from ..errors import ImageError
    from ..io import read_image
    from .inputs import image_paths

    opts = run.options
    _check(opts)
    bundle = run.bundle()
    opts.layer = run.layers_for(opts.layer, DEFAULT_LAYERS)
    for name in opts.layer:
        bundle.layer(name)  # unknown layers fail here, once, with suggestions
    target = None
    if opts.target is not None:
        from ..models.bundle import require_classifier

        require_classifier(bundle, "dream --target")
        target = bundle.class_index(opts.target)
    paths = image_paths(run, images)
    table = _Table(bundle, opts, target)
    interrupted = False
    with run.progress() as progress:
        task = progress.add_task("dream", total=None, info="")
        done = 0
        for i, path in enumerate(paths):
            try:
                photo = read_image(path)
            except ImageError as exc:
                run.fail(str(path), str(exc))
                continue
            record, stopped, done = _dream_one(run, bundle, path, photo, opts, target, progress, task, done,
                                               len(paths) - i - 1, f"{i + 1}/{len(paths)} {path.name}")
            table.add(record)
            if stopped == "interrupted":
                err_console.print("[yellow]interrupted; saved the dream so far[/yellow]")
                interrupted = True
                break
    table.show(run)
    code = run.finish()
    return 130 if interrupted else code


def _check(opts: Options) -> None:
    """Option values a user can get wrong, reported before any model is loaded."""
    if opts.octaves < 1:
        raise DeepprobeError(f"--octaves must be at least 1, got {opts.octaves}")
    if opts.octave_scale <= 1.0:
        raise DeepprobeError(f"--octave-scale must be above 1, got {opts.octave_scale:g}")
    if opts.strength < 0:
        raise DeepprobeError(f"--strength must be 0 or more, got {opts.strength:g}")
    if opts.smooth < 0 or opts.tv < 0 or opts.jitter < 0:
        raise DeepprobeError("--smooth, --tv and --jitter must be 0 or more")
    if opts.tile and opts.tile < MIN_TILE:
        raise DeepprobeError(f"--tile must be 0 (never tile) or at least {MIN_TILE} pixels, got {opts.tile}")
    if not opts.layer:
        raise DeepprobeError("give at least one --layer")


def _dream_one(run, bundle, path: Path, photo, opts: Options, target: int | None, progress, task, done: int,
               remaining: int, label: str):
    """Dream on one photo, save it and its panel, measure before/after; returns (record, stopped, steps done)."""
    from ..figures.synthesis import dream_panel
    from ..io import name_slug, safe_stem
    from ..techniques.dream import dream, measure, octave_sizes, tile_slices

    h, w = photo.shape[-2:]
    per_image = opts.steps * len(octave_sizes((h, w), opts.octaves, opts.octave_scale))
    progress.update(task, total=done + per_image * (remaining + 1), info=label)

    def callback(step: int, _total: int, loss: float, fwd) -> None:
        info = f"{label} · loss {loss:.4g}"
        if fwd is not None and fwd.logits is not None and bundle.labels:
            info += f" · top: {bundle.class_name(int(fwd.logits[0].argmax()))}"
        progress.update(task, completed=done + step, info=info)

    result = dream(bundle, photo, opts.layer, target=target, octaves=opts.octaves, octave_scale=opts.octave_scale,
                   steps=opts.steps, lr=opts.lr, strength=opts.strength, jitter=opts.jitter, smooth=opts.smooth,
                   tv=opts.tv, tile=opts.tile, seed=run.common.seed, callback=callback)
    done += result.steps
    progress.update(task, completed=done)
    dreamed = result.images.cpu()
    tiles = len(tile_slices(h, opts.tile)) * len(tile_slices(w, opts.tile))
    measured = measure(bundle, photo, dreamed, opts.layer, target, opts.tile)
    record = {
        "input": str(path), "size": [int(h), int(w)], **measured,
        "layout_measure": "Pearson correlation of input and output luminance, area-downsampled to a 24-px short side",
        "octave_sizes": [list(s) for s in result.octave_sizes], "steps": result.steps,
        "tiles": tiles, "tile": opts.tile, "stopped": result.stopped,
    }
    name = f"{safe_stem(path)}_dream" + (f"_{name_slug(record['target'])}" if target is not None else "")
    out = run.save_image(dreamed, f"{name}.png", result={**record, "loss_curve": [round(v, 5) for v in result.losses]})
    title = f"{path.name} · {bundle.title} · {len(result.octave_sizes)} octaves x {opts.steps} steps"
    panel_path = run.save_image(dream_panel(photo, dreamed, record, title),
                                f"{name}_panel.png", result={"input": str(path), "dream": str(out), "panel": True})
    record.update(output=str(out), panel=str(panel_path))
    run.add_result(record)
    return record, result.stopped, done


class _Table:
    """A summary table printed after the run (not with --quiet/--json)."""

    def __init__(self, bundle, opts: Options, target: int | None):
        from rich.table import Table

        what = f"guided to {bundle.class_name(target)}" if target is not None else ", ".join(opts.layer)
        self.guided = target is not None
        self.table = Table(title=f"dream · {bundle.title} · {what} on {bundle.device}")
        columns = ["image", "size", "norm before -> after", "layout r"]
        columns += ["target logit before -> after"] if self.guided else []
        for column in columns + ["output"]:
            self.table.add_column(column)

    def add(self, r: dict) -> None:
        norms = ", ".join(f"{r['activation_norm_before'][k]:.2f} -> {r['activation_norm_after'][k]:.2f}"
                          for k in r["activation_norm_before"])
        row = [Path(r["input"]).name, f"{r['size'][1]}x{r['size'][0]}", norms, f"{r['layout_correlation']:.3f}"]
        if self.guided:
            row.append(f"{r['target_logit_before']:.2f} -> {r['target_logit_after']:.2f}")
        self.table.add_row(*row, Path(r["output"]).name)

    def show(self, run) -> None:
        if run.show_progress and self.table.row_count:
            out_console.print(self.table)
