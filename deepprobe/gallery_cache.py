"""Gallery embeddings kept between runs: a k-NN or retrieval gallery of thousands of images is embedded once per
model, not once per command.

One file per (model, gallery folder) under `cache_dir()/galleries/`. The model is named by a fingerprint of what
decides its embeddings -- every parameter and buffer (name, shape, dtype, sum, sum of |x|, its first values), the
preprocessing and the device type -- so new weights, another input size or a `python:` module whose code changed
its layers miss the cache, while the same model loaded again hits it. Each image is matched by path, size and
modification time: an added or changed file is embedded, a removed one dropped, the rest reused. Files are read
with `weights_only=True`; a file that cannot be read is ignored (and replaced). Models with random weights are
never cached. `DEEPPROBE_CACHE=off` turns the cache off; `DEEPPROBE_CACHE=DIR` moves it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

VERSION = 1
FIRST_VALUES = 16  # values of each tensor that enter the fingerprint besides its sums


def cache_dir() -> Path | None:
    """deepprobe's cache folder ($DEEPPROBE_CACHE, else $XDG_CACHE_HOME/deepprobe or ~/.cache/deepprobe); None when
    DEEPPROBE_CACHE is "off"."""
    chosen = os.environ.get("DEEPPROBE_CACHE")
    if chosen is not None and chosen.strip().lower() in ("off", "0", "none", "false"):
        return None
    if chosen:
        return Path(chosen).expanduser()
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "deepprobe"


@torch.no_grad()
def model_fingerprint(bundle) -> str:
    """A hash of what decides the model's embeddings (see the module's docstring); cheap next to one forward pass."""
    digest = hashlib.sha256()
    digest.update(repr((bundle.spec, bundle.preprocess, bundle.device.type, bundle.task)).encode())
    for name, tensor in bundle.net.state_dict().items():
        flat = tensor.detach().reshape(-1)
        values = flat.float() if flat.is_floating_point() or flat.dtype == torch.bool else flat.double()
        stats = torch.stack([values.double().sum(), values.double().abs().sum()]).cpu().tolist() if flat.numel() else []
        first = values[:FIRST_VALUES].double().cpu().tolist()
        digest.update(repr((name, tuple(tensor.shape), str(tensor.dtype), stats, first)).encode())
    return digest.hexdigest()[:32]


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class GalleryCache:
    """The embeddings kept for one model and one gallery folder: `lookup(path)` before embedding an image,
    `keep(path, embedding)` after, `save()` at the end (atomically: a run stopped midway leaves the old file)."""

    def __init__(self, file: Path | None, stored: dict[str, tuple[tuple[int, int], torch.Tensor]]):
        self.file = file
        self.stored = stored
        self.kept: dict[str, tuple[tuple[int, int], torch.Tensor]] = {}
        self.hits = 0
        self.note: str | None = None  # one line for the user when an old cache file was unusable

    @classmethod
    def open(cls, bundle, folder: str | Path) -> GalleryCache:
        root = cache_dir()
        if root is None or bundle.random_init:
            return cls(None, {})
        key = hashlib.sha256(f"{model_fingerprint(bundle)}|{Path(folder).resolve()}".encode()).hexdigest()[:40]
        file = root / "galleries" / f"{key}.pt"
        cache = cls(file, {})
        if file.is_file():
            try:
                data = torch.load(file, map_location="cpu", weights_only=True)
                if data.get("version") != VERSION:
                    raise ValueError(f"version {data.get('version')}")
                cache.stored = {p: ((int(s), int(m)), e) for p, s, m, e in
                                zip(data["paths"], data["sizes"], data["mtimes"], data["embeddings"])}
            except Exception as exc:  # a damaged or foreign file: embed again and replace it
                cache.note = f"ignoring the unreadable gallery cache {file} ({type(exc).__name__}); embedding again"
        return cache

    def lookup(self, path: Path) -> torch.Tensor | None:
        """The kept embedding of this file if it is unchanged since it was embedded."""
        entry = self.stored.get(str(path.resolve()))
        stamp = _stamp(path)
        if entry is None or stamp is None or entry[0] != stamp:
            return None
        self.hits += 1
        self.kept[str(path.resolve())] = entry
        return entry[1]

    def keep(self, path: Path, embedding: torch.Tensor) -> None:
        stamp = _stamp(path)
        if self.file is not None and stamp is not None:
            self.kept[str(path.resolve())] = (stamp, embedding.detach().float().cpu())

    def save(self) -> None:
        """Write what this run used (files no longer in the gallery are dropped); nothing when nothing changed."""
        if self.file is None or (self.kept.keys() == self.stored.keys() and self.hits == len(self.kept)):
            return
        paths = sorted(self.kept)
        data = {"version": VERSION, "paths": paths, "sizes": [self.kept[p][0][0] for p in paths],
                "mtimes": [self.kept[p][0][1] for p in paths],
                "embeddings": torch.stack([self.kept[p][1] for p in paths]) if paths else torch.zeros(0)}
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            partial = self.file.with_suffix(f".{os.getpid()}.tmp")
            torch.save(data, partial)
            os.replace(partial, self.file)
        except OSError as exc:  # a read-only home: the run goes on without a cache
            self.note = f"could not write the gallery cache {self.file}: {exc.strerror or exc}"
