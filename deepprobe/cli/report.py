"""`deepprobe report FOLDER`: one self-contained HTML page of every run in an output folder."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.markup import escape

from ..errors import DeepprobeError
from . import app
from .common import out_console, user_errors


@app.command("report")
def report_cmd(folder: str = typer.Argument("outputs", help="Output folder to report on (searched recursively)."),
               output: str = typer.Option(None, "--output", "-o",
                                          help="HTML file to write (default: FOLDER/report.html)."),
               link: bool = typer.Option(False, "--link",
                                         help="Link images relatively instead of inlining them (smaller page; "
                                              "keep it beside the folder)."),
               title: str = typer.Option(None, "--title", help="Page title (default: the folder's name)."),
               force: bool = typer.Option(False, "--force", help="Overwrite an existing report file."),
               json_summary: bool = typer.Option(False, "--json", help="Print a JSON summary (with `outputs`)."),
               quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
               debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    """Write one HTML page of every run in FOLDER (inputs, results, panels, metrics, loss curves).

    Runs are grouped by command, newest first. Images are inlined, so the page can be mailed or archived
    alone (--link keeps it small instead)."""
    with user_errors(debug):
        path, runs = _write(Path(folder), output, link, title, force)
    if json_summary:
        summary = {"command": "report", "folder": folder, "runs": len(runs),
                   "commands": sorted({r.command for r in runs}), "outputs": [str(path)]}
        sys.stdout.write(json.dumps(summary) + "\n")
    elif not quiet:
        out_console.print(f"{len(runs)} run(s) from {escape(folder)} -> [bold]{escape(str(path))}[/bold]")


def _write(folder: Path, output: str | None, link: bool, title: str | None, force: bool):
    from ..io import unique_path
    from ..report import build_html, collect_runs
    from .rerun import command_line, shell_line

    if not folder.is_dir():
        raise DeepprobeError(f"{folder}: no such folder")
    runs = collect_runs(folder)
    target = unique_path(Path(output) if output else folder / "report.html", force)
    target.parent.mkdir(parents=True, exist_ok=True)

    def describe(record: dict) -> str:
        try:
            return shell_line(command_line(app, record, warn=False).argv)
        except DeepprobeError as exc:  # a command this version no longer has: show what was recorded
            return f"deepprobe {record.get('command')}  # {exc}"

    page = build_html(runs, title=title or f"deepprobe report: {folder.resolve().name}",
                      link_from=target.parent if link else None, command_line=describe)
    target.write_text(page, encoding="utf-8")
    return target, runs
