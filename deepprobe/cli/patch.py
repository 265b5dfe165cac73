"""`deepprobe patch train|apply`: a universal adversarial patch (Brown et al. 2017)."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import DeepprobeError
from ..options.patch import Options
from . import app
from .common import command, err_console, opt, out_console
from .patch_preview import save_preview

patch_app = typer.Typer(help="Learn a universal adversarial patch and paste it into new photos.",
                        no_args_is_help=True)
app.add_typer(patch_app, name="patch")


def _load_all(run, bundle, images: list[str]):
    import torch

    from .inputs import batches, image_paths

    paths, chunks = [], []
    for chunk_paths, x in batches(run, bundle, image_paths(run, images), 16):
        paths += chunk_paths
        chunks.append(x)
    if not chunks:
        raise DeepprobeError("none of the images could be read")
    return paths, torch.cat(chunks)


@command(patch_app, "train", options_name="patch")
def train_cmd(run, images: list[str] = typer.Argument(..., help="Training photos: files, folders or globs."),
              target: str = opt(Options, "target", help="Class the patch makes the model see, e.g. toaster."),
              size: str = opt(Options, "size", help="Patch side as a fraction of the image's shorter side."),
              steps: int = opt(Options, "steps", help="Adam steps (one batch of random placements each)."),
              lr: str = opt(Options, "lr", help="Adam step size on the patch pixels."),
              batch_size: int = opt(Options, "batch_size", help="Training photos per step."),
              scale_min: str = opt(Options, "scale_min", help="Smallest random scale while training (x size)."),
              scale_max: str = opt(Options, "scale_max", help="Largest random scale while training (x size)."),
              rotation: str = opt(Options, "rotation", help="Random rotation while training, +- degrees."),
              preview: int = opt(Options, "preview", help="Patched training photos shown in the preview panel."),
              vanish: str = opt(Options, "vanish", help="Detectors: the class the patch hides (or 'all'), "
                                                        "Thys et al. 2019."),
              box_size: str = opt(Options, "box_size", help="Detectors: patch side as a fraction of each box's side."),
              min_score: str = opt(Options, "min_score", help="Detectors: a box counts at or above this score.")):
    """Learn one patch that turns photos into TARGET wherever it is placed (expectation over random
    placement, scale and rotation). Saves the patch PNG, its metadata JSON and a preview panel.

    On a detector, --vanish CLASS learns a patch that, pasted on each box of CLASS (centred, scaled to the box
    by --box-size), hides it (Thys et al. 2019); it is compared with a random-noise patch of the same size."""
    from ..figures.patch import patch_preview
    from ..techniques.patch import apply_patch, train_patch
    from .progress import engine_callback

    opts = run.options
    bundle = run.bundle()
    if bundle.task == "detection":
        from .patch_detection import train_detector_patch

        return train_detector_patch(run, bundle, images, opts)
    if opts.vanish is not None:
        raise DeepprobeError(f"--vanish applies to detectors; {bundle.spec} is not one (use --target)")
    if opts.target is None:
        raise DeepprobeError("--target is required, e.g. --target toaster")
    target_index = bundle.class_index(opts.target)
    paths, x = _load_all(run, bundle, images)
    scale_range = (opts.scale_min, opts.scale_max)
    with run.progress() as progress:
        task = progress.add_task(f"patch -> {bundle.class_name(target_index)}", total=opts.steps, info="")
        result = train_patch(bundle, x, target_index, size=opts.size, steps=opts.steps, lr=opts.lr,
                             batch_size=opts.batch_size, scale_range=scale_range, rotation=opts.rotation,
                             seed=run.common.seed, callback=engine_callback(progress, task, bundle))
    name = bundle.class_name(target_index).replace(" ", "_")
    meta = {"patch": True, "target": bundle.class_name(target_index), "target_index": target_index,
            "size": opts.size, "size_means": "side as a fraction of the image's shorter side",
            "scale_range": list(scale_range), "rotation": opts.rotation, "pixels": int(result.patch.shape[-1]),
            "training_images": [str(p) for p in paths], "steps": result.steps, "stopped": result.stopped,
            "train_success_rate": round(result.train_success, 4), "loss_curve": result.losses}
    patch_path = run.save_image(result.patch, f"patch_{name}.png", result=meta)

    shown = x[: max(1, opts.preview)]
    applied = apply_patch(bundle, shown, result.patch, target_index, size=opts.size, placement="random",
                          seed=run.common.seed + 7, scale_range=scale_range, rotation=opts.rotation)
    figure = patch_preview(result.patch, applied, bundle.class_name, opts.size, result.train_success)
    preview_path = save_preview(run, figure, f"patch_{name}_preview.png", patch_path, meta)
    run.summary.update(target=meta["target"], train_success_rate=meta["train_success_rate"])
    run.interrupted = result.stopped == "interrupted"
    if result.message:
        err_console.print(f"[yellow]{result.message}[/yellow]")
    if run.show_progress:
        out_console.print(f"patch: {patch_path}  (training success {result.train_success:.0%})")
        out_console.print(f"preview: {preview_path}")


def _metadata(patch_file: Path) -> dict:
    sidecar = patch_file.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeepprobeError(f"{sidecar}: not valid JSON ({exc})") from None
    return data.get("result", data) if isinstance(data, dict) else {}


@command(patch_app, "apply", options_name="patch")
def apply_cmd(run, patch_file: str = typer.Argument(..., metavar="PATCH.png", help="A patch saved by `patch train`."),
              images: list[str] = typer.Argument(..., help="Photos to paste it into: files, folders or globs."),
              target: str = opt(Options, "target", help="Class the patch aims at (default: from the patch's JSON)."),
              size: str = opt(Options, "size", help="Patch side as a fraction of the shorter side (default: from its JSON)."),
              x: str = opt(Options, "x", help="Fixed placement: centre x as a fraction of the width, in [0, 1]."),
              y: str = opt(Options, "y", help="Fixed placement: centre y as a fraction of the height, in [0, 1]."),
              scale: str = opt(Options, "scale", help="Fixed placement: side as a fraction of the shorter side, "
                                                      "in (0, 1]."),
              angle: str = opt(Options, "angle", help="Fixed placement: rotation in degrees."),
              random_place: bool = typer.Option(False, "--random", help="Random placement, scale and rotation "
                                                "(the training distribution; the default without --x/--y/--scale/--angle)."),
              batch_size: int = opt(Options, "batch_size", help="Photos patched and classified together."),
              vanish: str = opt(Options, "vanish", help="Detectors: the class the patch hides (default: from its JSON)."),
              box_size: str = opt(Options, "box_size", help="Detectors: patch side as a fraction of each box's side "
                                                            "(default: from its JSON)."),
              min_score: str = opt(Options, "min_score", help="Detectors: a box counts at or above this score.")):
    """Paste a learned patch into new photos and report how often the model then sees its target
    (judged on the saved 8-bit images). On a detector: the patch goes on each box of its class, and the
    report says how many of those boxes the detector still finds."""
    from ..figures.patch import SHOWN, applied_caption, applied_grid
    from ..io import read_image, safe_stem
    from ..techniques.patch import apply_patch
    from .inputs import batches, image_paths

    opts = run.options
    path = Path(patch_file)
    if not path.is_file():
        raise DeepprobeError(f"{patch_file}: no such patch file")
    meta = _metadata(path)
    if meta.get("vanish") is not None or opts.vanish is not None:
        from .patch_detection import apply_detector_patch

        if any(v is not None for v in (x, y, scale, angle)):
            raise DeepprobeError("a vanishing patch goes on each box it hides: --x/--y/--scale/--angle do not apply")
        return apply_detector_patch(run, path, images, meta, opts)
    fixed = [v is not None for v in (x, y, scale, angle)]
    if random_place and any(fixed):
        raise DeepprobeError("--random cannot be combined with --x/--y/--scale/--angle")
    target_name = target if target is not None else meta.get("target")
    if target_name is None:
        raise DeepprobeError(f"no target for {path.name}: pass --target (no metadata JSON beside the patch)")
    side = opts.size if size is not None else float(meta.get("size", opts.size))
    scale_range = tuple(meta.get("scale_range", (opts.scale_min, opts.scale_max)))
    rotation = float(meta.get("rotation", opts.rotation))
    placement = "random" if not any(fixed) else (0.5 if x is None else x, 0.5 if y is None else y,
                                                 side if scale is None else scale, 0.0 if angle is None else angle)
    bundle = run.bundle()
    target_index = bundle.class_index(target_name)
    patch = read_image(path)
    paths = image_paths(run, images)
    done, fooled, shown, captions = [], 0, [], []
    with run.progress() as progress:  # streamed in batches: memory stays flat however many photos
        task = progress.add_task(f"patch -> {bundle.class_name(target_index)}", total=len(paths), info="")
        for b, (chunk_paths, batch) in enumerate(batches(run, bundle, paths, batch_size or opts.batch_size)):
            applied = apply_patch(bundle, batch, patch, target_index, size=side, placement=placement,
                                  seed=run.common.seed + b, scale_range=scale_range, rotation=rotation)
            for i, src in enumerate(chunk_paths):
                row = {"input": str(src), "patch": str(path), "target": bundle.class_name(target_index),
                       "predicted": bundle.class_name(int(applied.predicted[i])),
                       "target_prob": round(float(applied.target_prob[i]), 6), "success": bool(applied.success[i]),
                       "placement": applied.placements[i]}
                saved = run.save_image(applied.images[i:i + 1], f"{safe_stem(src)}_patched.png", result=row)
                run.add_result({**row, "output": str(saved)})
                if len(shown) < SHOWN:
                    shown.append(applied.images[i].cpu())
                    captions.append(applied_caption(bundle.class_name, applied, i))
            done += chunk_paths
            fooled += int(applied.success.sum())
            progress.update(task, completed=len(done), info=f"{fooled}/{len(done)} fooled")
    if not done:
        raise DeepprobeError("none of the images could be read")
    rate = fooled / len(done)
    panel = applied_grid(shown, captions, fooled, len(done), bundle.class_name(target_index))
    panel_path = run.save_image(panel, f"{safe_stem(path)}_applied_panel.png",
                                result={"panel": True, "success_rate": rate})
    run.summary.update(target=bundle.class_name(target_index), success_rate=round(rate, 4),
                       images=len(done), fooled=fooled,
                       placement="random" if placement == "random" else list(placement), panel=str(panel_path))
    if run.show_progress:
        out_console.print(f"{fooled}/{len(done)} photos now read as "
                          f"{bundle.class_name(target_index)} ({rate:.0%}); panel: {panel_path}")
