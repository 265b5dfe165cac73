"""Where each command is documented: the site's address in one place, and a page (with its anchor) per command.

`--help` of every command ends with its link (cli/__init__.py) and `deepprobe report` links each kind of run to its
page. The site is built from docs/ (mkdocs.yml); tests/test_docs.py checks every page and anchor named here exists
there. Set DEEPPROBE_DOCS_URL to point the links at another copy of the site (a local build, a fork). Torch-free.
"""
from __future__ import annotations

import os

DOCS_URL = os.environ.get("DEEPPROBE_DOCS_URL", "https://deepprobe.readthedocs.io/en/latest").rstrip("/")

# command (as the run records it: "patch train") -> "page.md#anchor" under docs/
PAGES = {
    "classify": "models.md#classify",
    "models": "models.md#model-specs-model",
    "layers": "models.md#classify",
    "fool": "fool.md#fool",
    "patch": "fool.md#patch",
    "age": "fool.md#age",
    "maximize": "visualize.md#maximize",
    "invert": "visualize.md#invert",
    "dream": "visualize.md#dream",
    "style": "visualize.md#style",
    "explain": "explain.md",
    "evaluate": "evaluate.md",
    "robustness": "robustness.md",
    "recipes": "recipes.md#recipes",
    "rerun": "recipes.md#rerun",
    "report": "recipes.md#report",
}


def page_of(command: str) -> str | None:
    """'fool.md#fool' for "fool"; a sub-command ("patch train") is documented with its group."""
    return PAGES.get(command) or PAGES.get(command.split(" ")[0])


def docs_url(command: str) -> str | None:
    """The published address of `command`'s page (None for a command the site does not know)."""
    page = page_of(command)
    if page is None:
        return None
    path, _, anchor = page.partition("#")
    return f"{DOCS_URL}/{path.removesuffix('.md')}/" + (f"#{anchor}" if anchor else "")
