"""Results that show themselves: in Jupyter as the captioned figure the CLI writes, elsewhere with `.show()`.

A result class mixes in `Shows` and implements `figure()` (a PIL image built by `deepprobe.figures`, the same
functions the CLI saves its panels with). What the figure needs beyond the result's own fields (the model for
class names and titles, the input photo) is attached by the API function with `_attach(...)`: kept out of the
dataclass fields, so `==`, `repr`, `dataclasses.asdict` and pickling see only the numbers.

Torch-free at import (PIL is imported when a figure is drawn).
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import DeepprobeError


def png_bytes(image) -> bytes:
    """A PIL image as PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def img_tag(image, alt: str = "") -> str:
    """An <img> with the image inlined as base64 PNG (notebooks keep it with the cell's output)."""
    data = base64.b64encode(png_bytes(image)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def stack(images: Sequence, gap: int = 8):
    """Figures one under another (one panel per image of a batch), left-aligned on white."""
    from PIL import Image

    images = list(images)
    if len(images) == 1:
        return images[0]
    width = max(im.width for im in images)
    canvas = Image.new("RGB", (width, sum(im.height for im in images) + gap * (len(images) - 1)), (255, 255, 255))
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height + gap
    return canvas


def save_figure(image, path: str | Path, force: bool = False) -> Path:
    """Write a figure as PNG; an existing file is kept and a -1, -2... suffix added (unless force), as the CLI
    does. Returns the path written."""
    from .io import save_png

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DeepprobeError(f"{path}: figures are saved as PNG (name the file .png)")
    return save_png(image, path, force)


def in_notebook() -> bool:
    """True inside IPython/Jupyter, where `display()` renders the figure in place."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


class Shows:
    """Mixin: `figure()` -> PIL image; Jupyter calls `_repr_png_`; `.show()` and `.save(path)` for everyone else."""

    def figure(self):
        raise NotImplementedError

    # ------------------------------------------------------------------ context kept out of the fields
    def _attach(self, **context: Any):
        """Keep what the figure needs (model, photo, options) beside the result, not in its fields."""
        self.__dict__.setdefault("_context", {}).update(context)
        return self

    def _context_get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get("_context", {}).get(key, default)

    def _needs(self, *keys: str) -> list[Any]:
        context = self.__dict__.get("_context", {})
        missing = [k for k in keys if context.get(k) is None]
        if missing:
            raise DeepprobeError(f"this {type(self).__name__} was not made by deepprobe's API function (or was "
                                 f"copied), so it lacks {', '.join(missing)} to draw its figure")
        return [context[k] for k in keys]

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_context", None)  # a model and photos: not part of the result's numbers
        return state

    # ------------------------------------------------------------------ what users call
    def _repr_png_(self) -> bytes | None:
        try:
            return png_bytes(self.figure())
        except DeepprobeError:  # nothing to draw (no context): Jupyter falls back to the text repr
            return None

    def show(self) -> None:
        """Display the figure: in place in Jupyter, else in the system's image viewer."""
        if in_notebook():
            from IPython.display import display

            display(self)
        else:
            self.figure().show()

    def save(self, path: str | Path, force: bool = False) -> Path:
        """Write the figure as PNG at `path` (never over an existing file unless force); returns the path."""
        return save_figure(self.figure(), path, force)


class ShowsTable(Shows):
    """A result that is mostly numbers: Jupyter shows `table_html()` with its plots under it (HTML wins over PNG
    in notebooks, so the plots go inside it)."""

    def table_html(self) -> str:
        raise NotImplementedError

    def html_figures(self) -> list:
        """The plots shown under the table (default: the figure)."""
        return [self.figure()]

    def _repr_html_(self) -> str | None:
        try:
            figures = self.html_figures()
        except DeepprobeError:
            figures = []
        return self.table_html() + "".join(img_tag(f, type(self).__name__) for f in figures)


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "",
               bold: set[tuple[int, int]] | None = None) -> str:
    """A plain HTML table (cells escaped); `bold` holds (row, column) positions to emphasise."""
    bold = bold or set()
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td><b>{e(c)}</b></td>" if (r, k) in bold else f"<td>{e(c)}</td>"
                                    for k, c in enumerate(row)) + "</tr>" for r, row in enumerate(rows))
    cap = f"<caption>{e(caption)}</caption>" if caption else ""
    return f'<table class="deepprobe">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
