"""Rich progress bars that plug into the engine's progress callback."""
from __future__ import annotations

import contextlib

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .console import err_console


def make_progress(enabled: bool = True):
    """A Progress on stderr with step count, time and a free-text field for loss / top class."""
    if not enabled:
        return contextlib.nullcontext(_Silent())
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=err_console, transient=False)


class _Silent:
    """Stands in for Progress when output is quiet, so commands need no if-branches."""

    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        pass

    def advance(self, *args, **kwargs):
        pass


def engine_callback(progress, task, bundle, advance_to_step: bool = True, prefix: str = ""):
    """An engine callback that moves the bar and shows loss and the current top class of image 0 (after
    `prefix`, e.g. how many images are being optimized)."""
    def callback(step: int, total: int, loss: float, fwd) -> None:
        info = (f"{prefix} · " if prefix else "") + f"loss {loss:.4g}"
        if fwd is not None and fwd.logits is not None and bundle.labels:
            info += f" · top: {bundle.class_name(int(fwd.logits[0].argmax()))}"
        progress.update(task, completed=step if advance_to_step else None, info=info)
    return callback
