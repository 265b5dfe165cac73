"""Class names found in data (folder names, manifest labels) -> the model's class indices.

A name may be the model's class name (`ostrich`, `tiger_cat`; case-insensitive unless that is ambiguous), an
integer index (`9`) or, for a 1000-class (ImageNet-1k) model, a WordNet id (`n01518878`; the order timm ships in
`timm/data/_info/imagenet_synsets.txt`, read offline). Exact matches only: a folder is never mapped to a merely
similar class, since a silent mislabel would corrupt every figure computed from it.
"""
from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable

from ..errors import DeepprobeError

WORDNET_ID = re.compile(r"^n\d{8}$")
_SHOWN = 8  # unknown names listed in one error line


@functools.lru_cache(maxsize=1)
def imagenet_wordnet_ids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class order (timm's synset list; no download)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


def _normal(name: str) -> str:
    return " ".join(name.replace("_", " ").split())


class ClassMapper:
    """Looks up names against one model's labels; `map_all` raises one error listing every unknown name."""

    def __init__(self, labels: list[str] | None, num_classes: int | None, model: str = "the model"):
        self.labels = labels or []
        self.num_classes = num_classes if num_classes is not None else (len(labels) if labels else None)
        self.model = model
        self._exact = {}
        self._folded: dict[str, list[int]] = {}
        for i, label in enumerate(self.labels):
            for alias in {label, label.split(",")[0]}:  # "tench, Tinca tinca" (Hugging Face) is also "tench"
                self._exact.setdefault(_normal(alias), i)
                self._folded.setdefault(_normal(alias).lower(), []).append(i)
        self._wnids = imagenet_wordnet_ids() if self.num_classes == 1000 else ()

    def lookup(self, name: str | int) -> int | None:
        """The class index for `name`, or None when nothing matches exactly."""
        if isinstance(name, int) and not isinstance(name, bool):
            text = str(name)
        else:
            text = _normal(str(name))
        if text.isdigit():
            index = int(text)
            return index if self.num_classes is None or index < self.num_classes else None
        if WORDNET_ID.match(text) and text in self._wnids:
            return self._wnids.index(text)
        if text in self._exact:
            return self._exact[text]
        folded = sorted(set(self._folded.get(text.lower(), [])))
        return folded[0] if len(folded) == 1 else None

    def map_all(self, names: Iterable[str | int], what: str = "class folder") -> dict[str, int]:
        """{name: index} for every name, or one DeepprobeError that lists the names that match no class."""
        mapping, unknown = {}, []
        for name in dict.fromkeys(names):
            index = self.lookup(name)
            if index is None:
                unknown.append(str(name))
            else:
                mapping[str(name)] = index
        if unknown:
            raise DeepprobeError(self._unknown_message(unknown, what))
        return mapping

    def _unknown_message(self, unknown: list[str], what: str) -> str:
        shown = []
        lowered = {label.lower(): label for label in self.labels}
        for name in unknown[:_SHOWN]:
            close = difflib.get_close_matches(_normal(name).lower(), list(lowered), n=1, cutoff=0.75)
            shown.append(f"{name!r}" + (f" (did you mean {lowered[close[0]]!r}?)" if close else ""))
        more = f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else ""
        forms = ["class name (e.g. 'ostrich')"] if self.labels else []
        if self.num_classes:
            forms.append(f"index 0-{self.num_classes - 1}")
        if self._wnids:
            forms.append("WordNet id (e.g. 'n01518878')")
        return (f"{len(unknown)} {what} name(s) match no class of {self.model}: {', '.join(shown)}{more}; "
                f"use a {', '.join(forms) or 'class index'}")
