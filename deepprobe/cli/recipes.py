"""`deepprobe recipes`: the named presets, where each one comes from and what it sets."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from . import app
from .common import command, out_console


@command(app, "recipes", uses_model=False, options=False)
def recipes_cmd(run, name: str = typer.Argument(None, help="Show one recipe (name or FILE.toml) in full."),
                for_command: str = typer.Option(None, "--command", "-c", help="Only recipes for this command.")):
    """List the recipes with one-line descriptions; use one with `--recipe NAME` on its command.

    Named recipes are read from ./recipes/, then ~/.config/deepprobe/recipes/ ($XDG_CONFIG_HOME), then the
    bundled ones; the first folder with a name wins, so your recipe shadows a bundled one of the same name
    (the listing says so). Every recipe is checked against its command's options (keys, types, ranges): a
    broken one is listed with its error (and makes the exit code 1) instead of hiding the others."""
    from ..errors import DeepprobeError
    from ..options.recipes import load_recipe, read_recipe, recipe_dirs, recipe_files

    if name is not None:
        rows = [_row(load_recipe(name))]
    else:
        rows = []
        for entry in recipe_files():
            try:
                rows.append(_row(read_recipe(entry)))
            except DeepprobeError as exc:
                rows.append({**_source(entry), "command": "?", "description": "", "options": {}, "error": str(exc)})
                run.fail(entry.path.name, str(exc))
    if for_command:
        rows = [r for r in rows if r["command"] == for_command]
    run.summary["recipes"] = rows
    run.summary["folders"] = [{"origin": origin, "path": str(folder)} for origin, folder in recipe_dirs()]
    if run.show_progress:
        _print(rows, detailed=name is not None)


def _source(entry) -> dict:
    """Name and where it comes from, for a Recipe or a RecipeFile that failed to read."""
    return {"name": entry.name, "path": str(entry.path), "origin": entry.origin,
            "shadows": [{"origin": hidden.origin, "path": str(hidden.path)} for hidden in entry.shadows]}


def _row(recipe) -> dict:
    return {**_source(recipe), "command": recipe.command, "description": recipe.description, "options": recipe.options}


def _where(row: dict) -> str:
    """Where a recipe comes from, e.g. `./recipes (shadows the bundled one)`."""
    folder = Path(row["path"]).parent
    shown = {"bundled": "bundled", "working directory": "./recipes"}.get(row["origin"])
    if shown is None:  # the user's config folder or a file: its folder, with ~ for the home folder
        shown = "~/" + str(folder.relative_to(Path.home())) if folder.is_relative_to(Path.home()) else str(folder)
    hidden = " and ".join(f"the {h['origin']} one" for h in row["shadows"])
    return shown + (f" (shadows {hidden})" if hidden else "")


def _print(rows: list[dict], detailed: bool) -> None:
    from rich.table import Table

    if detailed:
        row = rows[0]
        out_console.print(f"[bold]{escape(row['name'])}[/bold] "
                          + escape(f"({row['path']}; {_where(row)})\n{row['description']}\n"
                                   f"use: deepprobe {row['command']} ... --recipe {row['name']}"))
        table = Table()
        table.add_column("option")
        table.add_column("value")
        for key, value in row["options"].items():
            table.add_row(key, repr(value))
        out_console.print(table)
        return
    table = Table(caption="use: deepprobe COMMAND ... --recipe NAME (typed options win) · "
                          "details: deepprobe recipes NAME · yours: ./recipes/ or ~/.config/deepprobe/recipes/")
    for col in ("name", "command", "from", "description"):
        table.add_column(col, overflow="fold")
    for row in rows:
        # names, paths and descriptions come from users' files: escaped, so brackets print as they are
        description = escape(row["description"]) if "error" not in row else f"[red]{escape(row['error'])}[/red]"
        table.add_row(escape(row["name"]), escape(row["command"]), escape(_where(row)), description)
    out_console.print(table)
