"""`deepprobe classify` and `explain` on depth estimators: the depth map in colour beside the photo, and maps of
what drives a region's predicted depth. Called by cli/classify.py and cli/explain.py once the model's task is
known. One image at a time (each keeps its size)."""
from __future__ import annotations

from ..errors import DeepprobeError
from .common import out_console


def classify_depth(run, bundle, images: list[str], region_text: str | None) -> None:
    """Per image: NAME_depth.png (the depth in colour, near red, far blue), NAME_depth_panel.png (photo | depth)
    and NAME_depth.npy (the (H,W) float prediction), with the region's mean depth if --region is given."""
    import numpy as np
    from rich.table import Table

    from ..figures.foundation import depth_colour, depth_meaning, depth_panel
    from ..io import safe_stem
    from ..models.depth import estimate_depth
    from .inputs import batches, image_paths
    from .regions import parse_region

    region = parse_region(region_text)
    paths = image_paths(run, images)
    table = Table(title=f"{bundle.title} on {bundle.device}")
    for column in ("image", "min", "mean", "max") + (("region mean", "rest mean") if region else ()) + ("output",):
        table.add_column(column)
    for chunk, x in batches(run, bundle, paths, 1):
        path, photo = chunk[0], x[0].detach().cpu()
        try:
            found = estimate_depth(bundle, x, region)[0]
        except DeepprobeError as exc:  # a region outside this photo: the others go on
            run.fail(str(path), str(exc))
            continue
        stats = found.as_dict()
        colour = depth_colour(found)
        record = {"input": str(path), **stats, "meaning": depth_meaning(found)}
        stem = safe_stem(path)
        out = run.save_image(colour, f"{stem}_depth.png", result=record)
        npy = run.save_file(lambda p, d=found.depth.numpy(): np.save(p, d), f"{stem}_depth.npy", sidecar=False)
        side = run.save_image(depth_panel(photo, found, path.name, bundle.title, colour), f"{stem}_depth_panel.png",
                              result={**record, "depth": str(out)})
        run.add_result({**record, "output": str(out), "panel": str(side), "depth_file": str(npy)})
        extra = (f"{stats['region_mean']:.4g}", "-" if stats["rest_mean"] is None else f"{stats['rest_mean']:.4g}") \
            if region else ()
        table.add_row(path.name, f"{stats['min']:.4g}", f"{stats['mean']:.4g}", f"{stats['max']:.4g}", *extra,
                      out.name)
    if run.show_progress and table.row_count:
        out_console.print(table)
        out_console.print(f"[dim]{bundle.spec}: {depth_meaning(found)}; in the pictures near is red, far blue[/dim]")


def explain_depth(run, bundle, images: list[str], opts, region_text: str | None) -> None:
    """Per image and method: the map of what drives the mean predicted depth of --region (default: the whole
    image), drawn with the region."""
    import torch

    from ..explain import explain
    from ..explain.sam_depth import adapter_layer, check_method
    from ..figures.foundation import depth_colour, depth_meaning
    from ..models.depth import estimate_depth
    from ..options.explain import method_kwargs
    from ..render import draw_boxes
    from .explain_tasks import MapWriter
    from .inputs import batches, image_paths
    from .regions import parse_region

    region = parse_region(region_text)
    for method in opts.method:
        check_method(bundle, method, opts.target or None)
    paths = image_paths(run, images)
    writer = MapWriter.with_table(run, bundle, opts, ("region", "mean depth"))
    with run.progress() as progress:
        task = progress.add_task("explain", total=len(paths), info="")
        for chunk, x in batches(run, bundle, paths, 1):
            writer.pick_layer(x, adapter_layer)
            path, photo = chunk[0], x[0].detach().cpu()
            progress.update(task, info=path.name)
            try:
                found = estimate_depth(bundle, x, region)[0]
            except DeepprobeError as exc:
                run.fail(str(path), str(exc))
                continue
            maps = {m: explain(bundle, x, m, region=region, **method_kwargs(opts, m, writer.cam_layer))[0]
                    for m in opts.method}
            stats = found.as_dict()
            value = stats["region_mean"] if region else stats["mean"]
            where = ",".join(f"{v:g}" for v in region) if region else "whole image"
            boxes = [region] if region else []
            decorate = (lambda pic: draw_boxes(pic, boxes, [""], min_side=0)) if region else None
            record = {"input": str(path), "class": where, "region": list(region) if region else None,
                      "mean_depth": round(value, 6), "meaning": depth_meaning(found)}
            caption = f"depth of {where}: {value:.4g} ({depth_meaning(found)})"
            first = depth_colour(found)
            writer.write(path, "depth" + ("_" + where.replace(",", "_") if region else ""), photo,
                          decorate(first) if decorate else first, {m: torch.as_tensor(v) for m, v in maps.items()},
                          record, decorate, caption, f"{value:.4g}")
            progress.advance(task)
    writer.finish(region=list(region) if region else None)
