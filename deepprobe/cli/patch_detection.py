"""`deepprobe patch train|apply` on detectors: a patch on each box of a class that hides it (Thys et al. 2019).
Called by cli/patch.py once the model is known to be a detector (or the patch's JSON says it hides a class)."""
from __future__ import annotations

from pathlib import Path

from ..errors import DeepprobeError
from ..options.patch import Options
from .common import out_console


def _training_photos(run, bundle, images: list[str]):
    """Training photos at one common square size (the detector's own input size), so they batch."""
    import torch

    from ..errors import ImageError
    from ..io import read_image
    from ..models.preprocess import Preprocess
    from .inputs import image_paths

    side = bundle.preprocess.resize or 512
    square = Preprocess(crop=(side, side), resize=side, interpolation="bilinear")
    paths, photos = [], []
    for path in image_paths(run, images):
        try:
            photos.append(square.geometry(read_image(path)))
            paths.append(path)
        except ImageError as exc:
            run.fail(str(path), str(exc))
    if not photos:
        raise DeepprobeError("none of the images could be read")
    return paths, torch.cat(photos).to(bundle.device)


def _describe(bundle, applied, i: int) -> str:
    before = len(applied.before[i])
    return f"{before - round(float(applied.hidden[i]) * before)}/{before} still found" if before else "none found"


def train_detector_patch(run, bundle, images: list[str], opts: Options) -> None:
    from ..figures.patch import preview_grid
    from ..io import name_slug
    from ..render import draw_detections
    from ..techniques.patch_detection import apply_vanish_patch, train_vanish_patch
    from .patch_preview import save_preview
    from .progress import engine_callback

    if opts.vanish is None:
        raise DeepprobeError(f"{bundle.spec} is a detector: say which class the patch hides, e.g. --vanish person")
    if opts.target is not None:
        raise DeepprobeError("a detector patch hides a class (--vanish); --target applies to classifiers")
    paths, x = _training_photos(run, bundle, images)
    scale_range = (opts.scale_min, opts.scale_max)
    with run.progress() as progress:
        task = progress.add_task(f"patch hides {opts.vanish}", total=opts.steps, info="")
        result = train_vanish_patch(bundle, x, opts.vanish, size=opts.box_size, steps=opts.steps, lr=opts.lr,
                                    batch_size=opts.batch_size, scale_range=scale_range, rotation=opts.rotation,
                                    min_score=opts.min_score, seed=run.common.seed,
                                    callback=engine_callback(progress, task, bundle))
    names = "all" if result.classes is None else [bundle.class_name(c) for c in result.classes]
    meta = {"patch": True, "vanish": names, "box_size": opts.box_size,
            "size_means": "side as a fraction of each box's side (sqrt of its area)", "min_score": opts.min_score,
            "scale_range": list(scale_range), "rotation": opts.rotation, "pixels": int(result.patch.shape[-1]),
            "training_images": [str(p) for p in paths], "steps": result.steps, "stopped": result.stopped,
            "train_hidden_rate": round(result.train_hidden, 4), "noise_patch_hidden_rate": round(result.noise_hidden, 4),
            "loss_curve": result.losses}
    slug = name_slug("all" if names == "all" else "_".join(names))
    patch_path = run.save_image(result.patch, f"patch_hide_{slug}.png", result=meta)
    shown = x[: max(1, opts.preview)]
    applied = apply_vanish_patch(bundle, shown, result.patch, result.classes, size=opts.box_size,
                                 scale_range=scale_range, rotation=opts.rotation, min_score=opts.min_score,
                                 seed=run.common.seed + 7)
    tiles = [result.patch] + [draw_detections(img, det) for img, det in zip(applied.images, applied.after)]
    captions = [f"patch hides {', '.join(names) if names != 'all' else 'all'}"] + \
        [_describe(bundle, applied, i) for i in range(len(applied.images))]
    title = (f"patch ({opts.box_size:g} of each box's side) on training photos: {result.train_hidden:.0%} of the "
             f"boxes hidden (noise patch: {result.noise_hidden:.0%})")
    preview_path = save_preview(run, preview_grid(tiles, captions, title), f"patch_hide_{slug}_preview.png", patch_path,
                                meta)
    run.summary.update(vanish=names, train_hidden_rate=meta["train_hidden_rate"],
                       noise_patch_hidden_rate=meta["noise_patch_hidden_rate"])
    if run.show_progress:
        out_console.print(f"patch: {patch_path}  (hides {result.train_hidden:.0%} of the training boxes; a noise "
                          f"patch of the same size hides {result.noise_hidden:.0%})")
        out_console.print(f"preview: {preview_path}")


def apply_detector_patch(run, path: Path, images: list[str], meta: dict, opts: Options) -> None:
    from ..io import read_image, safe_stem
    from ..render import draw_detections, grid
    from ..techniques.patch_detection import apply_vanish_patch
    from .inputs import batches, image_paths

    bundle = run.bundle()
    if bundle.task != "detection":
        raise DeepprobeError(f"{path.name} hides boxes from a detector; {bundle.spec} is not one")
    vanish = opts.vanish if opts.vanish is not None else meta.get("vanish")
    shown_name = vanish if isinstance(vanish, str) else ", ".join(vanish)
    size = opts.box_size if opts.box_size != Options.box_size or "box_size" not in meta else float(meta["box_size"])
    scale_range = tuple(meta.get("scale_range", (opts.scale_min, opts.scale_max)))
    rotation = float(meta.get("rotation", opts.rotation))
    patch = read_image(path)
    paths = image_paths(run, images)
    boxes = hidden = 0
    shown, captions = [], []
    with run.progress() as progress:
        task = progress.add_task(f"patch hides {shown_name}", total=len(paths), info="")
        for b, (chunk, x) in enumerate(batches(run, bundle, paths, 1)):  # one at a time: each keeps its size
            applied = apply_vanish_patch(bundle, x, patch, vanish, size=size, scale_range=scale_range,
                                         rotation=rotation, min_score=opts.min_score, seed=run.common.seed + b)
            found = len(applied.before[0])
            row = {"input": str(chunk[0]), "patch": str(path), "vanish": vanish, "boxes": found,
                   "hidden": round(float(applied.hidden[0]), 6), "before": applied.before[0].as_dict(),
                   "after": applied.after[0].as_dict(), "placements": applied.placements[0]}
            saved = run.save_image(applied.images, f"{safe_stem(chunk[0])}_patched.png", result=row)
            run.add_result({**row, "output": str(saved)})
            boxes += found
            hidden += float(applied.hidden[0]) * found
            if len(shown) < 12:
                shown.append(draw_detections(applied.images[0], applied.after[0]))
                captions.append(f"{chunk[0].name}: {_describe(bundle, applied, 0)}")
            progress.update(task, advance=1, info=f"{hidden:.0f}/{boxes} boxes hidden")
    rate = hidden / boxes if boxes else 0.0
    panel = grid(shown, captions, columns=min(len(shown), 4), cell=200,
                 title=f"{hidden:.0f}/{boxes} boxes of {shown_name} hidden")
    panel_path = run.save_image(panel, f"{safe_stem(path)}_applied_panel.png",
                                result={"panel": True, "hidden_rate": rate})
    run.summary.update(vanish=vanish, boxes=boxes, hidden_rate=round(rate, 4), panel=str(panel_path))
    if run.show_progress:
        out_console.print(f"{hidden:.0f}/{boxes} boxes of {shown_name} hidden ({rate:.0%}); panel: {panel_path}")
