"""Valid ranges of numeric options, declared once per options module and checked for the CLI, recipes and API.

Each `deepprobe/options/NAME.py` holds, beside its `Options` defaults, `RANGES = {"field": "(0, 1]", ...}`:
interval strings with `[`/`]` closed and `(`/`)` open ends, `inf` allowed. List fields are checked per element.
A range that depends on another option (eps <= 1 only for the L-inf norm) comes from an optional hook in the
same module, `related_ranges(values) -> {"field": ("interval", "why")}`, given every option's value.
An out-of-range value fails with one line naming the option, the range and the value. A field whose flag is not
`--field-name` (a repeatable flag named in the singular) is named in the module's optional `FLAGS = {field: flag}`.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import re
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from ..errors import DeepprobeError

COMMAND_LINE = "command line"  # the source of typed values: options are then named as flags (--batch-size)

_INTERVAL = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])\s*$")


class RangeError(DeepprobeError):
    """A numeric option outside its declared range."""


@dataclasses.dataclass(frozen=True)
class Interval:
    low: float
    high: float
    low_closed: bool
    high_closed: bool
    text: str

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below  # False for NaN

    def outside(self, integer: bool) -> float | None:
        """A value just outside the interval (None when it spans every number): for tests and examples."""
        if math.isfinite(self.low):
            value = self.low - 1 if self.low_closed else self.low
        elif math.isfinite(self.high):
            value = self.high + 1 if self.high_closed else self.high
        else:
            return None
        return int(math.floor(value)) if integer else value


@functools.lru_cache(maxsize=None)
def parse_interval(text: str) -> Interval:
    """'(0, 1]' -> Interval; `inf` and `-inf` are allowed as ends."""
    match = _INTERVAL.match(text)
    if not match:
        raise ValueError(f"not an interval like '(0, 1]' or '[1, inf)': {text!r}")
    left, low, high, right = match.groups()
    lo, hi = float(low), float(high)
    if lo > hi or (math.isinf(lo) and left == "[") or (math.isinf(hi) and right == "]"):
        raise ValueError(f"not a valid interval: {text!r}")
    return Interval(lo, hi, left == "[", right == "]", text.strip())


def options_module(spec: str | type | ModuleType) -> ModuleType:
    """The options module of a command name ("fool"), of its Options class, or the module itself."""
    if isinstance(spec, ModuleType):
        return spec
    if isinstance(spec, type):
        return sys.modules[spec.__module__]
    return importlib.import_module(f"deepprobe.options.{spec}")


def _label(name: str, source: str | None, flags: Mapping[str, str] | None = None) -> str:
    if source == COMMAND_LINE:
        return (flags or {}).get(name) or "--" + name.replace("_", "-")
    return f"{source}: {name}" if source else name


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(name: str, value: Any, text: str, source: str | None, why: str = "",
           flags: Mapping[str, str] | None = None) -> None:
    interval = parse_interval(text)
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if _number(item) and item not in interval:
            shown = f"{item:g}" if isinstance(item, float) else str(item)
            raise RangeError(f"{_label(name, source, flags)} must be in {interval.text}{f' {why}' if why else ''}, got {shown}")


def check_ranges(spec: str | type | ModuleType, values: Mapping[str, Any], source: str | None = None,
                 related: bool = True) -> None:
    """Check every value that has a declared range (others, None and non-numbers are skipped).

    spec: a command name ("fool"), its Options class or its options module. source names where the values came
    from (a recipe path, COMMAND_LINE) for the error line. related: also check ranges that depend on other
    options, which needs every option's value (missing ones are taken from the Options defaults)."""
    module = options_module(spec)
    flags = getattr(module, "FLAGS", None)
    for name, text in getattr(module, "RANGES", {}).items():
        if name in values and values[name] is not None:
            _check(name, values[name], text, source, flags=flags)
    hook = getattr(module, "related_ranges", None)
    if related and hook is not None:
        options_cls = getattr(module, "Options", None)
        defaults = dataclasses.asdict(options_cls()) if options_cls is not None else {}
        merged = {**defaults, **{k: v for k, v in values.items() if v is not None}}
        for name, (text, why) in hook(merged).items():
            if merged.get(name) is not None:
                _check(name, merged[name], text, source, why, flags)
