"""`cifar10:ROOT` / `cifar100:ROOT`: the CIFAR test set as torchvision keeps it on disk, never downloaded.

The files are torchvision's (`ROOT/cifar-10-batches-py/test_batch`, `ROOT/cifar-100-python/test`: pickled dicts
of a (N, 3072) uint8 array and the labels). Items keep the file's order, so `--limit N` takes the first N test
images: RobustBench's protocol (`robustbench.data.load_cifar10(n_examples=N)`). The pickles are read with an
unpickler that builds nothing but NumPy arrays and plain values: a crafted file cannot run code.
"""
from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DeepprobeError

PREFIXES = ("cifar10", "cifar100")


@dataclass(frozen=True)
class Layout:
    folder: str  # torchvision's folder under ROOT
    test: str  # the test file in it
    labels_key: str
    classes: int
    files: str  # what a complete folder holds, for the error message


LAYOUTS = {
    "cifar10": Layout("cifar-10-batches-py", "test_batch", "labels", 10,
                      "data_batch_1..data_batch_5, test_batch, batches.meta"),
    "cifar100": Layout("cifar-100-python", "test", "fine_labels", 100, "train, test, meta"),
}

# What a CIFAR pickle may build: NumPy arrays (and their dtypes/scalars) and bytes; anything else is refused.
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to build {module}.{name}")


def split_spec(spec: str) -> tuple[str, str] | None:
    """('cifar10', ROOT) for a `cifar10:ROOT` DATA argument, else None."""
    prefix, sep, root = spec.partition(":")
    return (prefix, root) if sep and prefix in PREFIXES else None


def test_file(prefix: str, root: str | Path) -> Path:
    """The test-set file under ROOT (ROOT may also be torchvision's folder itself)."""
    layout = LAYOUTS[prefix]
    base = Path(root).expanduser()
    for candidate in (base / layout.folder / layout.test, base / layout.test):
        if candidate.is_file():
            return candidate
    raise DeepprobeError(
        f"{prefix}:{root}: no {prefix.upper()} test set at {base / layout.folder / layout.test} (torchvision's "
        f"on-disk format: {base / layout.folder}/ with {layout.files}); deepprobe never downloads it: "
        f"torchvision.datasets.{prefix.upper()}('{root}', download=True) fetches it where there is network")


def read_test_set(prefix: str, root: str | Path) -> tuple[Any, list[int], str]:
    """(images as a (N,3,32,32) uint8 tensor, labels, a digest of the file) of the CIFAR test set under ROOT."""
    import numpy as np
    import torch

    layout = LAYOUTS[prefix]
    path = test_file(prefix, root)
    try:
        raw = path.read_bytes()
        entry = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = [int(v) for v in entry[layout.labels_key]]
        images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, OSError) as exc:
        raise DeepprobeError(f"{path}: not a {prefix.upper()} batch in torchvision's format ({exc})") from None
    if len(labels) != len(images):
        raise DeepprobeError(f"{path}: {len(images)} images but {len(labels)} labels")
    bad = [v for v in labels if not 0 <= v < layout.classes]
    if bad:
        raise DeepprobeError(f"{path}: label {bad[0]} is not a {prefix.upper()} class (0..{layout.classes - 1})")
    return images, labels, hashlib.sha256(raw).hexdigest()[:16]


class Uint8Images:
    """(N,3,H,W) uint8 images served as float [0,1] slices (what the loader reads tensors data sets with), so
    the test set stays 30 MB in memory instead of 120. `fingerprint` names the file's content (a resumed run
    must measure the same images)."""

    def __init__(self, images, fingerprint: str):
        self.images = images
        self.shape = images.shape
        self.fingerprint = fingerprint

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index].float() / 255
