"""The `deepprobe` command line: one thin Typer command per technique (no torch import at start-up)."""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="deepprobe",
    help="Fool, visualize and explain trained image networks.\n\n"
         "Examples:  deepprobe classify examples/  |  deepprobe fool examples/cat.jpg --target ostrich  |  "
         "deepprobe explain examples/cat.jpg --method gradcam",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool):
    if value:
        from .. import __version__

        typer.echo(f"deepprobe {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    """Fool, visualize and explain trained image networks."""


# Each module registers its commands on `app` when imported; the order is the order in --help.
COMMAND_MODULES = ["classify", "info", "fool", "patch", "invert", "maximize", "dream", "style", "age", "explain",
                   "evaluate", "robustness", "recipes", "rerun", "report"]
for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
