"""A DATA argument -> an ordered list of items (index, path, label): folder tree, flat folder/glob/files, manifest,
or a CIFAR test set (`cifar10:ROOT`, `cifar100:ROOT`; cifar.py).

Nothing is read but names here (images are read later, streamed): listing a million files costs a directory walk,
not a million decodes. The order is fixed (sorted names), so an item's index identifies it across runs.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DeepprobeError
from ..io import IMAGE_SUFFIXES, find_images
from .cifar import split_spec
from .classes import ClassMapper

MANIFEST_SUFFIXES = (".csv", ".jsonl")

# How labels were obtained (the summary says which; with "predictions" the figure is not an accuracy).
FOLDERS, MANIFEST, PREDICTIONS, GIVEN = "class folders", "manifest", "predictions", "given"
TEST_SET = "test-set labels"  # a CIFAR test set's own labels


@dataclass(frozen=True)
class Item:
    """One image of a data set: its index in the full ordered list, where it lives and its label (None: the
    model's clean prediction stands in)."""

    index: int
    path: str | None
    label: int | None = None


@dataclass
class Dataset:
    """The ordered items of a DATA argument (or tensors) and how their labels were found."""

    items: list[Item]
    kind: str  # folder tree | flat | manifest | tensors
    labeling: str  # FOLDERS | MANIFEST | PREDICTIONS | GIVEN
    root: Path | None = None  # paths in the fingerprint are relative to it
    tensors: Any = None  # (N,3,H,W) images for kind "tensors"
    total: int = 0  # items before --limit/--sample
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.total = self.total or len(self.items)

    def fingerprint(self) -> str:
        """A digest of the ordered (path, label) list: the same files with the same labels give the same value."""
        digest = hashlib.sha256()
        if self.tensors is not None:  # in-memory images are never resumed from a folder: their shape suffices;
            # a test set read from a file names its content
            digest.update(str(getattr(self.tensors, "fingerprint", tuple(self.tensors.shape))).encode())
        for item in self.items:
            digest.update(f"{item.index}\t{self._key(item.path)}\t{item.label}\n".encode())
        return digest.hexdigest()[:16]

    def _key(self, path: str | None) -> str:
        if path is None:
            return ""
        if self.root is not None:
            try:
                return Path(path).resolve().relative_to(self.root.resolve()).as_posix()
            except ValueError:
                pass
        return Path(path).resolve().as_posix()

    def describe(self) -> dict:
        return {"kind": self.kind, "labels": self.labeling, "total": self.total, "selected": len(self.items),
                "fingerprint": self.fingerprint()}


def open_dataset(data: str | Path | Sequence[str | Path], labels: list[str] | None, num_classes: int | None,
                 model: str = "the model") -> Dataset:
    """A folder tree (subfolders = classes, no images of its own), a manifest (.csv/.jsonl with path,label),
    `cifar10:ROOT` / `cifar100:ROOT` (the test set in torchvision's files), or flat files/folders/globs (labels:
    the model's predictions)."""
    inputs = [str(data)] if isinstance(data, (str, Path)) else [str(d) for d in data]
    if not inputs:
        raise DeepprobeError("give a DATA folder, manifest, glob or image files")
    if any(split_spec(i) for i in inputs):
        if len(inputs) > 1:
            raise DeepprobeError("a cifar10:/cifar100: DATA argument stands alone")
        return cifar_test_set(*split_spec(inputs[0]), num_classes, model)
    mapper = ClassMapper(labels, num_classes, model)
    if len(inputs) == 1:
        path = Path(inputs[0])
        if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            return read_manifest(path, mapper)
        if path.is_dir():
            classes = _class_folders(path)
            if classes and not _loose_images(path):
                return folder_tree(path, classes, mapper)
            if classes:
                dataset = flat_files(inputs)
                dataset.notes.append(f"{path} has images of its own, so it is read as a flat folder and its "
                                     f"{len(classes)} subfolder(s) are ignored (a class tree keeps every image "
                                     f"inside a class folder)")
                return dataset
    return flat_files(inputs)


def _loose_images(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _has_images(p))


def _walk_images(folder: Path):
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                yield Path(dirpath) / name


def _has_images(folder: Path) -> bool:
    return next(_walk_images(folder), None) is not None


def folder_tree(root: Path, classes: list[Path], mapper: ClassMapper) -> Dataset:
    """Every image under each class folder (recursively), classes in name order, files in name order."""
    mapping = mapper.map_all([c.name for c in classes], "class folder")
    items = []
    for folder in classes:
        for path in _walk_images(folder):
            items.append(Item(len(items), str(path), mapping[folder.name]))
    return Dataset(items, "folder tree", FOLDERS, root=root)


def flat_files(inputs: list[str]) -> Dataset:
    """Files, flat folders and globs; labels are the model's own clean predictions."""
    paths, problems = find_images(inputs)
    if problems:
        item, reason = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DeepprobeError(f"{item}: {reason}{more}")
    if not paths:
        raise DeepprobeError(f"no images in {' '.join(inputs)}")
    root = Path(inputs[0]) if len(inputs) == 1 and Path(inputs[0]).is_dir() else None
    items = [Item(i, str(p), None) for i, p in enumerate(paths)]
    return Dataset(items, "flat", PREDICTIONS, root=root)


def read_manifest(path: Path, mapper: ClassMapper) -> Dataset:
    """A .csv (header with `path` and optionally `label`) or .jsonl ({"path": ..., "label": ...} per line);
    paths are relative to the manifest's folder. Without labels, the clean predictions stand in."""
    rows = _manifest_rows(path)
    if not rows:
        raise DeepprobeError(f"{path}: manifest lists no images")
    has_labels = [r[1] not in (None, "") for r in rows]
    if any(has_labels) and not all(has_labels):
        line = has_labels.index(False) + 1
        raise DeepprobeError(f"{path}: entry {line} has no label while others do (label every entry or none)")
    mapping = mapper.map_all([r[1] for r in rows], "manifest label") if all(has_labels) else {}
    items = []
    for file, label in rows:
        full = Path(file) if Path(file).is_absolute() else path.parent / file
        items.append(Item(len(items), str(full), mapping[str(label)] if mapping else None))
    return Dataset(items, "manifest", MANIFEST if mapping else PREDICTIONS, root=path.parent)


def _manifest_rows(path: Path) -> list[tuple[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeepprobeError(f"{path}: cannot read manifest ({exc})") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "path" not in fields:
            raise DeepprobeError(f"{path}: a CSV manifest needs a header line with a `path` column "
                                 f"(and `label`), found {reader.fieldnames}")
        rows = []
        for row in reader:
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            if row.get("path"):
                rows.append((row["path"], row.get("label")))
        return rows
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise DeepprobeError(f"{path} line {number}: not valid JSON") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise DeepprobeError(f"{path} line {number}: needs {{\"path\": \"...\", \"label\": ...}}")
        rows.append((entry["path"], entry.get("label")))
    return rows


def cifar_test_set(prefix: str, root: str, num_classes: int | None, model: str = "the model") -> Dataset:
    """The CIFAR-10/100 test set under ROOT in file order (so --limit N is RobustBench's first N)."""
    from .cifar import LAYOUTS, Uint8Images, read_test_set

    classes = LAYOUTS[prefix].classes
    if num_classes is not None and num_classes != classes:
        raise DeepprobeError(f"{prefix} has {classes} classes but {model} has {num_classes}: its outputs are not "
                             f"{prefix.upper()}'s classes")
    images, labels, digest = read_test_set(prefix, root)
    items = [Item(i, None, label) for i, label in enumerate(labels)]
    return Dataset(items, prefix, TEST_SET, tensors=Uint8Images(images, digest))


def from_tensors(x, y=None) -> Dataset:
    """Images already in memory: (N,3,H,W) in [0,1] and optional (N,) labels."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise DeepprobeError(f"images must be a (N,3,H,W) tensor, got shape {tuple(x.shape)}")
    if y is not None and len(y) != len(x):
        raise DeepprobeError(f"{len(x)} images but {len(y)} labels")
    labels = [None] * len(x) if y is None else [int(v) for v in y]
    items = [Item(i, None, label) for i, label in enumerate(labels)]
    return Dataset(items, "tensors", PREDICTIONS if y is None else GIVEN, tensors=x)


def select(dataset: Dataset, limit: int | None = None, sample: int | None = None, seed: int = 0) -> Dataset:
    """A fixed random `sample` (numpy's generator seeded with `seed`, kept in data order), then the first `limit`.
    Items keep their index in the full list, so per-image seeds and results do not depend on the subset."""
    items = dataset.items
    notes = list(dataset.notes)
    if sample is not None:
        if sample < 1:
            raise DeepprobeError(f"--sample must be at least 1, got {sample}")
        if sample >= len(items):
            notes.append(f"--sample {sample} covers all {len(items)} images")
        else:
            import numpy as np

            chosen = np.sort(np.random.default_rng(seed).choice(len(items), size=sample, replace=False))
            items = [items[i] for i in chosen]
    if limit is not None:
        if limit < 1:
            raise DeepprobeError(f"--limit must be at least 1, got {limit}")
        items = items[:limit]
    return Dataset(items, dataset.kind, dataset.labeling, dataset.root, dataset.tensors, dataset.total, notes)
