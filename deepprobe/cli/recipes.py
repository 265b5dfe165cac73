"""`deepprobe recipes`: the named presets (deepprobe/recipes/*.toml) and what each one sets."""
from __future__ import annotations

import typer

from . import app
from .common import command, out_console


@command(app, "recipes", uses_model=False, options=False)
def recipes_cmd(run, name: str = typer.Argument(None, help="Show one recipe (name or FILE.toml) in full."),
                for_command: str = typer.Option(None, "--command", "-c", help="Only recipes for this command.")):
    """List the recipes with one-line descriptions; use one with `--recipe NAME` on its command.

    Every recipe is checked against its command's options: a broken one is listed with its error
    (and makes the exit code 1) instead of hiding the others."""
    from ..errors import DeepprobeError
    from ..options import RECIPE_DIR, load_recipe

    if name is not None:
        recipe = load_recipe(name)
        rows = [_row(recipe)]
    else:
        rows = []
        for path in sorted(RECIPE_DIR.glob("*.toml")):
            try:
                rows.append(_row(load_recipe(str(path))))
            except DeepprobeError as exc:
                rows.append({"name": path.stem, "command": "?", "description": "", "options": {},
                             "path": str(path), "error": str(exc)})
                run.fail(path.name, str(exc))
    if for_command:
        rows = [r for r in rows if r["command"] == for_command]
    run.summary["recipes"] = rows
    if run.show_progress:
        _print(rows, detailed=name is not None)


def _row(recipe) -> dict:
    return {"name": recipe.name, "command": recipe.command, "description": recipe.description,
            "options": recipe.options, "path": str(recipe.path)}


def _print(rows: list[dict], detailed: bool) -> None:
    from rich.table import Table

    if detailed:
        row = rows[0]
        out_console.print(f"[bold]{row['name']}[/bold] ({row['path']})\n{row['description']}\n"
                          f"use: deepprobe {row['command']} ... --recipe {row['name']}")
        table = Table()
        table.add_column("option")
        table.add_column("value")
        for key, value in row["options"].items():
            table.add_row(key, repr(value))
        out_console.print(table)
        return
    table = Table(caption="use: deepprobe COMMAND ... --recipe NAME (typed options win) · "
                          "details: deepprobe recipes NAME")
    for col in ("name", "command", "description"):
        table.add_column(col, overflow="fold")
    for row in rows:
        description = row["description"] if "error" not in row else f"[red]{row['error']}[/red]"
        table.add_row(row["name"], row["command"], description)
    out_console.print(table)
