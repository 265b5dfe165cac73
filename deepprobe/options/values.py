"""Option values: an Options dataclass per command, coerced from recipes and the command line, resolved as
dataclass default < recipe < what the user typed, and checked against the declared ranges (ranges.py).
Fractions like "8/255" are accepted for float fields."""
from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from fractions import Fraction
from typing import Any

from ..errors import DeepprobeError
from .ranges import COMMAND_LINE, check_ranges


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


def field_kind(hint) -> tuple[type, bool]:
    """(base type, is_list) of a field annotation such as float, int | None, list[str]."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return field_kind(args[0])
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
        kind, is_list = field_kind(hints[name])
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


def parse_input_size(value: Any, source: str = "--input-size") -> tuple[int, int] | None:
    """A model input size as (H, W): N, "N", "H,W", "HxW" or [H, W]; None stays None."""
    if value is None:
        return None
    items: Any = value
    if isinstance(value, str):
        items = [v for v in value.replace("x", ",").split(",")]
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    try:
        numbers = [int(str(v).strip()) for v in items]
    except (TypeError, ValueError):
        numbers = []
    if not 1 <= len(numbers) <= 2 or min(numbers) < 1 or isinstance(value, bool):
        raise DeepprobeError(f"{source} must be N or H,W (positive pixel counts), got {value!r}")
    return (numbers[0], numbers[-1])
