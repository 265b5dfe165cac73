"""`deepprobe classify`: top-k classes per image, as a table or JSON; boxes for detectors, class areas and a
colour overlay for segmenters."""
from __future__ import annotations

import typer

from ..options.classify import Options
from . import app
from .common import command, opt, out_console
from .progress import make_progress
from .inputs import batches, image_paths
from .gallery import EMBEDDERS
from .prompts import apply_prompts, labels_option, text_option
from .regions import box_option, point_option, refuse_spatial, region_option


@command(app, "classify")
def classify_cmd(run, images: list[str] = typer.Argument(..., help="Image files, folders or globs."),
                 top: int = opt(Options, "top", "--top", "-k", help="Classes to show per image."),
                 batch_size: int = opt(Options, "batch_size", help="Images per forward pass (detectors and "
                                                                   "segmenters: one at a time)."),
                 min_score: str = opt(Options, "min_score", help="Detectors: boxes at or above this score."),
                 alpha: str = opt(Options, "alpha", help="Segmenters: opacity of the class colours."),
                 gallery: str = typer.Option(None, "--gallery", help="Embedders: a folder with a sub-folder of "
                                             "images per class (DINO's k-NN classification), or of images only "
                                             "(nearest images). Its embeddings are kept between runs (only new or "
                                             "changed images are embedded again; DEEPPROBE_CACHE=off keeps none).",
                                             rich_help_panel=EMBEDDERS),
                 neighbors: int = opt(Options, "neighbors", help="Embedders: k, the gallery images that vote.",
                                      rich_help_panel=EMBEDDERS),
                 temperature: str = opt(Options, "temperature", help="Embedders: each neighbour votes with "
                                        "weight exp(cosine / T).", rich_help_panel=EMBEDDERS),
                 text: list[str] = text_option(), labels: str = labels_option(),
                 point: list[str] = point_option(), box: list[str] = box_option(),
                 region: str = region_option("whose mean depth to report")):
    """Print the top-k classes of each image with their probabilities.

    On a detector: every box at or above --min-score (class, score, xyxy) and NAME_detections.png with the boxes
    drawn; on a segmenter: the classes present with their share of the image and NAME_segmentation.png with a
    colour per class. Both with JSON sidecars. On CLIP (hf:DIR): zero-shot probabilities over the --text /
    --labels prompts. On an embedder (DINO, CLIP/SigLIP image towers) with --gallery DIR of class folders:
    DINO's k-NN classification (the --neighbors most cosine-similar gallery images vote with weight
    exp(cosine / T)), with the nearest gallery images; a gallery without class folders gives the nearest images.

    On Segment Anything (hf:DIR): per --point/--box prompt SAM's three masks with their predicted IoU scores
    (NAME_sam_K_PROMPT.png and _masks.npy); on a depth estimator: NAME_depth.png (depth in colour),
    NAME_depth_panel.png (photo | depth) and NAME_depth.npy."""
    from rich.table import Table

    from ..models.tasks import CLASSIFICATION, IMAGE_TEXT
    from ..techniques.classify import classify

    opts = run.options
    bundle = run.bundle()
    apply_prompts(run, bundle, text, labels)
    refuse_spatial(bundle, point, box, region)
    if bundle.task == "embedding":
        from .classify_embedding import classify_embedder_images

        return classify_embedder_images(run, bundle, images, gallery, opts)
    if gallery:
        from ..errors import DeepprobeError
        from ..models.tasks import describe_task

        raise DeepprobeError(f"--gallery applies to embedders; {bundle.spec} is {describe_task(bundle.task)}")
    if bundle.task == "promptable-segmentation":
        from .sam_tasks import classify_prompts

        return classify_prompts(run, bundle, images, point, box, opts.alpha)
    if bundle.task == "depth":
        from .depth_tasks import classify_depth

        return classify_depth(run, bundle, images, region)
    paths = image_paths(run, images)
    rows = []  # classifiers: (file name, [(class, probability)]), laid out by _table to fit the terminal
    table = Table(title=f"{bundle.title} on {bundle.device}")  # detectors and segmenters: a row per box / class
    table.add_column("image")
    ranks = bundle.task in (CLASSIFICATION, IMAGE_TEXT)  # class logits (CLIP: over the prompts)
    for column in () if ranks else _COLUMNS[bundle.task]:
        table.add_column(column)
    per_pass = opts.batch_size if ranks else 1  # other tasks keep each image's size
    with make_progress(run.show_progress and len(paths) > per_pass) as progress:
        task = progress.add_task("classifying", total=len(paths), info="")
        for chunk_paths, x in batches(run, bundle, paths, per_pass):
            for path, photo, found in zip(chunk_paths, x, classify(bundle, x, opts.top, opts.min_score)):
                if ranks:
                    run.add_result({"input": str(path), **found.as_dict()})
                    rows.append((path.name, list(zip(found.labels, found.probabilities))))
                else:
                    _WRITERS[bundle.task](run, path, photo, found, table, opts)
            progress.advance(task, len(chunk_paths))
    if run.show_progress:
        out_console.print(_table(rows, table.title) if ranks else table)


def _table(rows: list[tuple[str, list[tuple[str, float]]]], title: str):
    """One row per image with a column per rank when that fits the terminal unwrapped; otherwise (80 columns,
    long class names, --top 10) one line per class, so no cell wraps and no file name is cut."""
    from rich.measure import Measurement
    from rich.table import Table

    top = max((len(classes) for _, classes in rows), default=0)
    wide = Table(title=title)
    wide.add_column("image", no_wrap=True)
    for i in range(top):
        wide.add_column(f"#{i + 1}", no_wrap=True)
    for name, classes in rows:
        wide.add_row(name, *[f"{c} [dim]{p:.1%}[/dim]" for c, p in classes])
    unlimited = out_console.options.update_width(10_000)  # how wide it would be, not how wide it may be
    if Measurement.get(out_console, unlimited, wide).maximum <= out_console.width:
        return wide
    long = Table(title=title)
    long.add_column("image", overflow="fold")
    long.add_column("#", justify="right")
    long.add_column("class", overflow="fold")
    long.add_column("probability", justify="right")
    for name, classes in rows:
        for rank, (c, p) in enumerate(classes, 1):
            long.add_row(name if rank == 1 else "", str(rank), c, f"{p:.1%}", end_section=rank == len(classes))
    return long


def _write_detections(run, path, photo, found, table, opts: Options) -> None:
    from ..figures.tasks import detections_figure
    from ..io import safe_stem

    record = {"input": str(path), "min_score": opts.min_score, **found.as_dict()}
    out = run.save_image(detections_figure(photo, found, opts.min_score), f"{safe_stem(path)}_detections.png",
                         result=record)
    run.add_result({**record, "output": str(out)})
    for row in found.records() or [{"class": "-", "score": None, "box": None}]:
        table.add_row(path.name, row["class"], "-" if row["score"] is None else f"{row['score']:.2f}",
                      "-" if row["box"] is None else ", ".join(f"{v:.0f}" for v in row["box"]))


def _write_segmentation(run, path, photo, found, table, opts: Options) -> None:
    from ..figures.tasks import segmentation_figure
    from ..io import safe_stem

    record = {"input": str(path), **found.as_dict()}
    out = run.save_image(segmentation_figure(photo, found, opts.alpha), f"{safe_stem(path)}_segmentation.png",
                         result=record)
    run.add_result({**record, "output": str(out)})
    for row in found.records():
        table.add_row(path.name, row["class"] + (" (background)" if row["background"] else ""), f"{row['area']:.1%}")


_COLUMNS = {"detection": ("class", "score", "box (x0, y0, x1, y1)"), "segmentation": ("class", "area")}
_WRITERS = {"detection": _write_detections, "segmentation": _write_segmentation}
