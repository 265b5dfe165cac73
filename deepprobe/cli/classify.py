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
    from rich.table import Table

    from ..techniques.classify import classify

    bundle = run.bundle()
    paths = image_paths(run, images)
    table = Table(title=f"{bundle.spec} on {bundle.device}")
    table.add_column("image")
    for i in range(top):
        table.add_column(f"#{i + 1}")
    with make_progress(run.show_progress and len(paths) > batch_size) as progress:
        task = progress.add_task("classifying", total=len(paths), info="")
        for chunk_paths, x in batches(run, bundle, paths, batch_size):
            for path, pred in zip(chunk_paths, classify(bundle, x, top)):
                run.add_result({"input": str(path), **pred.as_dict()})
                table.add_row(path.name, *[f"{c} [dim]{p:.1%}[/dim]" for c, p in zip(pred.labels, pred.probabilities)])
            progress.advance(task, len(chunk_paths))
    if run.show_progress:
        out_console.print(table)
