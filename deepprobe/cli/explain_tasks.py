"""`deepprobe explain` on detectors (one map per box, drawn with its box) and segmenters (one map per class,
over the pixels the model gives that class). Called by cli/explain.py once the model's task is known."""
from __future__ import annotations

from pathlib import Path

from ..options.explain import CAM_METHODS, Options, method_kwargs
from .common import out_console


def explain_task_images(run, bundle, images: list[str], opts: Options) -> None:
    from ..explain.tasks import check_method, default_task_layer
    from .inputs import batches, image_paths

    for method in opts.method:
        check_method(bundle, method)  # rollout & co. on a detector: one line, before any work
    targets = list(dict.fromkeys(bundle.class_index(t) for t in opts.target)) or None  # typos fail here
    if opts.layer and any(m in CAM_METHODS for m in opts.method):
        bundle.layer(opts.layer)
    paths = image_paths(run, images)
    writer = MapWriter.with_table(run, bundle, opts, ("class", "score" if bundle.task == "detection" else "area"))
    with run.progress() as progress:
        task = progress.add_task("explain", total=len(paths), info="")
        for chunk_paths, x in batches(run, bundle, paths, 1):  # one at a time: each image keeps its size
            writer.pick_layer(x, default_task_layer)
            progress.update(task, info=chunk_paths[0].name)
            if bundle.task == "detection":
                writer.boxes(chunk_paths[0], x, targets)
            else:
                writer.segments(chunk_paths[0], x, targets)
            progress.advance(task)
    writer.finish(min_score=opts.min_score)


class MapWriter:
    """Computes each method's maps for one image and writes overlays, .npy maps, panels and sidecars."""

    def __init__(self, run, bundle, opts: Options, table):
        self.run, self.bundle, self.opts, self.table = run, bundle, opts, table
        self.cam_layer: str | None = None

    @classmethod
    def with_table(cls, run, bundle, opts: Options, columns: tuple[str, ...]) -> MapWriter:
        """A writer with its summary table: image, `columns` (what each output explains, a figure), output."""
        from rich.table import Table

        table = Table(title=f"explain · {bundle.title} · {', '.join(opts.method)} on {bundle.device}")
        for column in ("image", *columns, "output"):
            table.add_column(column)
        return cls(run, bundle, opts, table)

    def pick_layer(self, x, default) -> None:
        """The CAM layer, once: --layer, else `default(bundle, x)` (only when a CAM method runs)."""
        if self.cam_layer is None and any(m in CAM_METHODS for m in self.opts.method):
            self.cam_layer = self.opts.layer or default(self.bundle, x)

    def finish(self, **summary) -> None:
        """The methods and CAM layer (and `summary`) into the run's summary; the table on the terminal."""
        self.run.summary.update(methods=list(self.opts.method), cam_layer=self.cam_layer, **summary)
        if self.run.show_progress and self.table.row_count:
            out_console.print(self.table)
            if self.cam_layer:
                out_console.print(f"CAM layer: {self.cam_layer}")

    def _maps(self, x, **kwargs) -> dict:
        from ..explain import explain

        return {m: explain(self.bundle, x, m, **kwargs, **method_kwargs(self.opts, m, self.cam_layer))
                for m in self.opts.method}

    def boxes(self, path: Path, x, targets: list[int] | None) -> None:
        import torch

        from ..render import draw_detections

        per_method = self._maps(x, target=targets, min_score=self.opts.min_score)
        found = next(iter(per_method.values()))[0].detections
        if not len(found):
            wanted = "" if targets is None else " of " + ", ".join(self.bundle.class_name(t) for t in targets)
            out_console.print(f"{path.name}: no box{wanted} at score >= {self.opts.min_score:g}; nothing to explain")
            self.run.add_result({"input": str(path), "boxes": 0})
            return
        photo = x[0].detach().cpu()
        for k in range(len(found)):
            one = found.select(torch.tensor([k]))
            maps = {m: res[0].maps[k] for m, res in per_method.items()}
            record = {"input": str(path), "box_index": k, **one.records()[0]}
            self.write(path, f"box{k}_{one.names[0]}", photo, draw_detections(photo, one), maps, record,
                        lambda pic, one=one: draw_detections(pic, one),
                        f"{one.names[0]} {float(one.scores[0]):.2f}", f"{float(one.scores[0]):.2f}")

    def segments(self, path: Path, x, targets: list[int] | None) -> None:
        from ..models.outputs import segment
        from ..render import draw_segmentation, segmentation_caption

        seg = segment(self.bundle, x)[0]
        classes = targets or (seg.present() or seg.present(with_background=True))[:1]
        photo = x[0].detach().cpu()
        colored = draw_segmentation(photo, seg, self.opts.alpha)
        for cls in classes:
            name = self.bundle.class_name(cls)
            area = seg.areas.get(cls, 0.0)
            if area == 0:
                out_console.print(f"{path.name}: the model gives no pixel to {name}; nothing to explain "
                                  f"(it sees: {segmentation_caption(seg)})")
                self.run.add_result({"input": str(path), "class": name, "class_index": cls, "area": 0.0})
                continue
            maps = {m: v[0] for m, v in self._maps(x, target=cls).items()}
            record = {"input": str(path), "class": name, "class_index": cls, "area": round(area, 6)}
            self.write(path, name, photo, colored, maps, record, None, f"{name} on {area:.1%} of the image",
                        f"{area:.1%}")

    def write(self, path: Path, what: str, photo, first_tile, maps: dict, record: dict, decorate, caption: str,
               shown: str) -> None:
        """One overlay (+ .npy) per method, `decorate(overlay)` drawing the box if given; a panel for several."""
        import numpy as np

        from ..figures.explain import method_label
        from ..io import name_slug, safe_stem
        from ..render import captioned, overlay, panel

        stem = safe_stem(path)
        tiles, captions = [first_tile], [f"input · {caption}"]
        record = {**record, "methods": {}}
        for method, heat in maps.items():
            heat_np = heat.detach().cpu().numpy().astype(np.float32)
            pic = overlay(photo, heat_np, alpha=self.opts.alpha)
            if decorate is not None:
                pic = decorate(pic)
            label = method_label(method, self.cam_layer if method in CAM_METHODS else None)
            name = f"{stem}_{name_slug(method.replace('+', 'p'))}_{name_slug(what)}"
            out = self.run.save_image(captioned(pic, f"{label}\n{caption}"), f"{name}.png",
                                      result={**record, "method": method, "methods": None,
                                              "layer": self.cam_layer if method in CAM_METHODS else None})
            npy = self.run.save_file(lambda p, a=heat_np: np.save(p, a), f"{name}.npy", sidecar=False)
            record["methods"][method] = {"overlay": str(out), "map": str(npy)}
            tiles.append(pic)
            captions.append(f"{label}\n{caption}")
        first = next(iter(record["methods"].values()))["overlay"]
        if len(maps) > 1:
            title = f"{path.name} · {self.bundle.title} · explaining {caption}"
            first = str(self.run.save_image(panel(tiles, captions, cell=224, title=title),
                                            f"{stem}_{name_slug(what)}_panel.png", result={**record, "panel": True}))
            record["panel"] = first
        self.run.add_result(record)
        self.table.add_row(path.name, record.get("class", ""), shown, Path(first).name)
