"""Each command's defaults, in one place shared by the CLI, the Python API and recipes (torch-free).

A command NAME keeps its options dataclass in `deepprobe/options/NAME.py` as `Options`, and the valid range of
every numeric field beside it as `RANGES` (see ranges.py). Values resolve as dataclass default < recipe < what
the user typed. Fractions like "8/255" are accepted for float fields.
"""
from __future__ import annotations

import dataclasses
import importlib
import tomllib
import typing
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..errors import DeepprobeError
from .ranges import COMMAND_LINE, check_ranges

RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"


def options_for(command: str):
    """The Options dataclass of a command, or None when the command has no tunable options."""
    try:
        module = importlib.import_module(f"deepprobe.options.{command}")
    except ModuleNotFoundError:
        return None
    return getattr(module, "Options", None)


def parse_number(value: Any, kind: type, key: str, source: str) -> Any:
    """Coerce a recipe/CLI value to the field type, with an error that names the key and where it came from."""
    if value is None:
        return None
    try:
        if kind is float and isinstance(value, str):
            # "8/255" and also "0.5/255": numerator and denominator are each a decimal number
            num, _, den = value.strip().partition("/")
            return float(Fraction(num.strip()) / Fraction(den.strip() or 1))
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is int and isinstance(value, str):
            return int(value)
        if kind is bool and isinstance(value, bool):
            return value
        if kind is str and isinstance(value, str):
            return value
    except (ValueError, ZeroDivisionError):
        pass
    raise DeepprobeError(f"{source}: {key} must be {kind.__name__}, got {value!r}")


def _field_kind(hint) -> tuple[type, bool]:
    """(base type, is_list) of a field annotation such as float, int | None, list[str]."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _field_kind(args[0])
    if origin in (list, tuple):
        return typing.get_args(hint)[0], True
    return hint, False


def coerce(options_cls, values: dict[str, Any], source: str) -> dict[str, Any]:
    """Check keys, types and ranges of a mapping against an Options dataclass."""
    hints = typing.get_type_hints(options_cls)
    names = {f.name for f in dataclasses.fields(options_cls)}
    out = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in names:
            raise DeepprobeError(f"{source}: unknown option {key!r} (known: {', '.join(sorted(names))})")
        kind, is_list = _field_kind(hints[name])
        if value is None:
            out[name] = None
        elif is_list:
            items = value if isinstance(value, (list, tuple)) else [value]
            out[name] = [parse_number(v, kind, key, source) for v in items]
        else:
            out[name] = parse_number(value, kind, key, source)
    check_ranges(options_cls, out, source, related=False)  # related ranges need every value: see resolve()
    return out


def resolve(options_cls, recipe: dict[str, Any] | None, given: dict[str, Any], recipe_source: str = "recipe"):
    """Defaults < recipe < given (None or empty list in `given` means the user did not set it)."""
    merged: dict[str, Any] = {}
    if recipe:
        merged.update(coerce(options_cls, recipe, recipe_source))
    typed = {k: v for k, v in given.items() if v is not None and v != [] and v != ()}
    merged.update(coerce(options_cls, typed, COMMAND_LINE))
    options = options_cls(**merged)
    check_ranges(options_cls, dataclasses.asdict(options), COMMAND_LINE)
    return options


@dataclasses.dataclass
class Recipe:
    name: str
    command: str
    description: str
    options: dict[str, Any]
    path: Path


def list_recipes() -> list[Recipe]:
    return [load_recipe(str(p)) for p in sorted(RECIPE_DIR.glob("*.toml"))]


def load_recipe(name_or_path: str, command: str | None = None) -> Recipe:
    """A recipe by name (from deepprobe/recipes) or by path; checked against the command's Options."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = RECIPE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(RECIPE_DIR.glob("*.toml"))) or "none"
        raise DeepprobeError(f"unknown recipe {name_or_path!r} (known: {known})")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DeepprobeError(f"{path}: not valid TOML ({exc})") from None
    recipe_command = data.get("command")
    if not isinstance(recipe_command, str):
        raise DeepprobeError(f"{path}: a recipe needs a `command = \"...\"` line")
    if command is not None and recipe_command != command:
        raise DeepprobeError(f"{path}: recipe is for `{recipe_command}`, not `{command}`")
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise DeepprobeError(f"{path}: [options] must be a table")
    unknown = set(data) - {"command", "description", "options"}
    if unknown:
        raise DeepprobeError(f"{path}: unknown key {sorted(unknown)[0]!r} (a recipe has command, description, [options])")
    options_cls = options_for(recipe_command)
    if options_cls is None:
        raise DeepprobeError(f"{path}: command {recipe_command!r} takes no recipe")
    coerce(options_cls, options, str(path))
    return Recipe(path.stem, recipe_command, str(data.get("description", "")), options, path)
