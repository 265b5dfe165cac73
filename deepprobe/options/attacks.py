"""Names, cascades and settings of the robustness attacks (torch-free, so the CLI can list and check them).

The defaults are AutoAttack's "standard" version (Croce & Hein 2020, fra31/auto-attack `set_version`):
APGD-CE with 100 iterations and 1 restart, APGD-T over the 9 runner-up classes, FAB-T over 9 classes and
Square with 5,000 queries.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import DeepprobeError

NORMS = ("linf", "l2")
# Every single attack a cascade may hold. pgd/fgsm/cw are deepprobe.attack's methods (techniques/fool.py).
ATTACK_NAMES = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "pgd", "fgsm", "cw")
# Names that stand for a whole cascade.
CASCADES = {"autoattack": ("apgd-ce", "apgd-t", "fab-t", "square")}
DEFAULT_CASCADE = ("autoattack",)


@dataclass(frozen=True)
class AttackSettings:
    """How hard each attack of a cascade tries (the same numbers for every eps)."""

    norm: str = "linf"  # threat model: linf | l2 (eps is measured in this norm, in [0,1] pixel units)
    steps: int = 100  # iterations of each gradient attack run (apgd-*, fab-t, pgd; cw: per search round)
    restarts: int = 1  # runs from a fresh random start, for images still robust (apgd-*, fab-t, square)
    targets: int = 9  # apgd-t / fab-t: runner-up classes tried as targets, one run each
    queries: int = 5000  # square: model queries per image and restart

    def __post_init__(self):
        if self.norm not in NORMS:
            raise DeepprobeError(f"unknown norm {self.norm!r} (choose from {', '.join(NORMS)})")
        for name in ("steps", "restarts", "targets", "queries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DeepprobeError(f"{name} must be a whole number of at least 1, got {value!r}")


RANGES = {"steps": "[1, inf)", "restarts": "[1, inf)", "targets": "[1, inf)", "queries": "[1, inf)"}


def expand_cascade(names: str | Iterable[str]) -> list[str]:
    """Attack names in the order they run, cascade names (`autoattack`) expanded; repeats are kept.

    >>> expand_cascade(["autoattack"])
    ['apgd-ce', 'apgd-t', 'fab-t', 'square']
    """
    names = [names] if isinstance(names, str) else list(names)
    out: list[str] = []
    for name in names:
        key = str(name).strip().lower()
        if key in CASCADES:
            out += CASCADES[key]
        elif key in ATTACK_NAMES:
            out.append(key)
        else:
            known = ", ".join(list(CASCADES) + list(ATTACK_NAMES))
            raise DeepprobeError(f"unknown attack {name!r} (choose from {known})")
    if not out:
        raise DeepprobeError("no attack given (choose from " + ", ".join(list(CASCADES) + list(ATTACK_NAMES)) + ")")
    return out


def stage_names(cascade: Iterable[str]) -> list[str]:
    """One unique name per stage: a repeated attack gets #2, #3... (apgd-ce, apgd-ce#2)."""
    seen: dict[str, int] = {}
    out = []
    for name in cascade:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def eps_key(eps: float) -> str:
    """The string an eps is stored under in records and summaries: 7 significant digits, stable across runs."""
    return f"{float(eps):.7g}"
