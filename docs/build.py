"""Build the documentation site: execute the tutorials once, then `mkdocs build --strict` with their outputs.

    python docs/build.py            # -> site/ (about a minute on 2 CPU cores)
    python docs/build.py --out DIR

The notebooks in docs/tutorials/ are committed without outputs (no megabytes of images in git). This script
copies docs/ to a staging folder, runs every notebook there with nbclient (each in its own kernel, from
docs/tutorials/ so the notebooks find the repository's examples/), and builds the staged copy, so the site shows
the outputs while the build itself never executes anything (mkdocs-jupyter's `execute` stays off). A notebook
that raises fails the build, as does any mkdocs warning (a broken link or anchor, a missing docstring reference).
tests/test_docs.py calls the same functions.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TUTORIALS = DOCS / "tutorials"
CONFIG = ROOT / "mkdocs.yml"
# stderr lines that libraries print in any notebook and that say nothing about the tutorial: tqdm without
# ipywidgets, Hugging Face's progress bars while saving the tiny CLIP
NOISE = ("IProgress not found", "from .autonotebook import tqdm", "Writing model shards")


def notebooks() -> list[Path]:
    return sorted(TUTORIALS.glob("*.ipynb"))


def execute(notebook: Path, timeout: int = 600):
    """Run one notebook in a fresh kernel from docs/tutorials/; returns the executed notebook (raises on errors)."""
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(notebook, as_version=4)
    NotebookClient(book, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    for cell in book.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not _noise(o)]
    return book


def _noise(output) -> bool:
    """A stderr stream holding only NOISE lines (and blank ones)."""
    if output.get("output_type") != "stream" or output.get("name") != "stderr":
        return False
    lines = [line for line in output.get("text", "").replace("\r", "\n").splitlines() if line.strip()]
    return all(any(n in line for n in NOISE) for line in lines)


def stage(folder: Path) -> Path:
    """A copy of docs/ under `folder` (what the build reads), without the figure scripts' caches."""
    staged = folder / "docs"
    shutil.copytree(DOCS, staged, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    return staged


def execute_all(staged: Path, log=print) -> dict[str, float]:
    """Execute every tutorial, writing the executed copy into the staged docs; seconds per notebook."""
    import nbformat

    seconds = {}
    for notebook in notebooks():
        start = time.perf_counter()
        book = execute(notebook)
        seconds[notebook.name] = time.perf_counter() - start
        nbformat.write(book, staged / "tutorials" / notebook.name)
        log(f"executed {notebook.name} in {seconds[notebook.name]:.1f} s")
    return seconds


def build(staged: Path, site: Path) -> None:
    """`mkdocs build --strict` of the staged docs into `site` (mkdocs.yml's other settings unchanged)."""
    import logging

    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort

    warnings: list[str] = []

    class Collect(logging.Handler):  # the warnings that make a strict build abort, to say which they were
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(f"{record.levelname}: {record.getMessage()}")

    handler = Collect(logging.WARNING)
    logging.getLogger("mkdocs").addHandler(handler)
    try:
        config = load_config(str(CONFIG), docs_dir=str(staged), site_dir=str(site), strict=True)
        mkdocs_build(config)
    except Abort as exc:
        raise SiteError("\n".join([str(exc), *warnings])) from None
    finally:
        logging.getLogger("mkdocs").removeHandler(handler)


class SiteError(RuntimeError):
    """The strict build failed; the message lists every warning."""


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "site"), help="site folder (default: site/)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        staged = stage(Path(tmp))
        execute_all(staged)
        build(staged, Path(args.out).resolve())
    print(f"site: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
