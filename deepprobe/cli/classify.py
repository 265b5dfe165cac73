"""`deepprobe classify`: top-k classes per image, as a table or JSON."""
from __future__ import annotations

import typer

from ..options.classify import Options
from . import app
from .common import command, opt, out_console
from .progress import make_progress
from .inputs import batches, image_paths


@command(app, "classify")
def classify_cmd(run, images: list[str] = typer.Argument(..., help="Image files, folders or globs."),
                 top: int = opt(Options, "top", "--top", "-k", help="Classes to show per image."),
                 batch_size: int = opt(Options, "batch_size", help="Images per forward pass.")):
    """Print the top-k classes of each image with their probabilities."""
    from ..techniques.classify import classify

    bundle = run.bundle()
    paths = image_paths(run, images)
    rows = []
    with make_progress(run.show_progress and len(paths) > batch_size) as progress:
        task = progress.add_task("classifying", total=len(paths), info="")
        for chunk_paths, x in batches(run, bundle, paths, batch_size):
            for path, pred in zip(chunk_paths, classify(bundle, x, top)):
                run.add_result({"input": str(path), **pred.as_dict()})
                rows.append((path.name, list(zip(pred.labels, pred.probabilities))))
            progress.advance(task, len(chunk_paths))
    if run.show_progress:
        out_console.print(_table(rows, f"{bundle.spec} on {bundle.device}"))


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
