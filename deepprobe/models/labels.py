"""Class names, without any download, and forgiving lookup of a class by name or index."""
from __future__ import annotations

import difflib
from functools import lru_cache

from ..errors import DeepprobeError


@lru_cache(maxsize=1)
def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names of torchvision's weight metadata (`ResNet18_Weights...meta["categories"]`,
    equal as tests/test_models.py checks), read from a copy: importing torchvision.models costs seconds."""
    from importlib.resources import files

    return files(__package__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8").splitlines()


def resolve_class(labels: list[str] | None, name_or_index: str | int, num_classes: int | None = None) -> int:
    """'ostrich' or '9' or 9 -> 9; unknown names fail with the closest matches suggested."""
    if isinstance(name_or_index, int) or (isinstance(name_or_index, str) and name_or_index.strip().isdigit()):
        index = int(name_or_index)
        count = len(labels) if labels else num_classes
        if count is not None and not 0 <= index < count:
            raise DeepprobeError(f"class index {index} is out of range: the model has {count} classes (0..{count - 1})")
        return index
    if not labels:
        raise DeepprobeError(f"this model has no class names; give the class {name_or_index!r} as an integer index")
    wanted = str(name_or_index).strip().lower().replace("_", " ")
    lowered = [label.lower() for label in labels]
    if wanted in lowered:
        return lowered.index(wanted)
    starts = [i for i, label in enumerate(lowered) if label.startswith(wanted)]
    if len(starts) == 1:
        return starts[0]
    close = difflib.get_close_matches(wanted, lowered, n=3, cutoff=0.6)
    if close:
        hint = " or ".join(f'"{labels[lowered.index(c)]}"' for c in close)
        raise DeepprobeError(f'unknown class "{name_or_index}": did you mean {hint}?')
    if len(starts) > 1:
        hint = ", ".join(f'"{labels[i]}"' for i in starts[:5])
        raise DeepprobeError(f'class "{name_or_index}" is ambiguous: {hint}')
    raise DeepprobeError(f'unknown class "{name_or_index}" (use `deepprobe classify` to see class names, or an index)')
