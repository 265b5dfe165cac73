"""The `deepprobe` command line: one thin Typer command per technique (no torch import at start-up)."""
from __future__ import annotations

import importlib

import typer
from typer.core import TyperCommand, TyperGroup

from ..doc_links import DOCS_URL


class _FlagsShowNoType:
    """typer's rich --help prints a value type after every option, flags included (`--json <bool>`); a flag takes no
    value, so it shows none (typer prints an option's metavar instead of its type: an empty one for flags)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class Command(_FlagsShowNoType, TyperCommand):
    pass


class Group(_FlagsShowNoType, TyperGroup):
    pass


app = typer.Typer(
    cls=Group,
    name="deepprobe",
    help="Fool, visualize and explain trained image networks.\n\n"
         "Examples:  deepprobe classify examples/  |  deepprobe fool examples/cat.jpg --target ostrich  |  "
         "deepprobe explain examples/cat.jpg --method gradcam",
    epilog=f"Docs: {DOCS_URL}/",
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


def _use_our_classes(typer_app: typer.Typer, prefix: str = "") -> None:
    """Every command and sub-group, however it was registered, is built with the classes above, and its --help
    ends with the link to its page of the documentation site."""
    from ..doc_links import docs_url

    for info in typer_app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = Command
        name = info.name or info.callback.__name__.replace("_", "-")
        url = docs_url(f"{prefix}{name}")
        if url and not info.epilog:
            info.epilog = f"Docs: {url}"
    for group in typer_app.registered_groups:
        group.typer_instance.info.cls = Group
        url = docs_url(group.name)
        if url and not group.typer_instance.info.epilog:
            group.typer_instance.info.epilog = f"Docs: {url}"
        _use_our_classes(group.typer_instance, f"{group.name} ")


_use_our_classes(app)
