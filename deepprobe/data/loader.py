"""Streaming images: fixed chunks of items, each read and preprocessed by a torch DataLoader worker.

A chunk is the unit of work, of results on disk and of resuming: chunk c always holds items[c*size:(c+1)*size]
of the selected list, whatever the number of processes, so a batch (and the results computed on it) never
depends on how the work was shared. Only `workers` x 2 chunks are in memory at once, however long the list.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import DeepprobeError, ImageError
from .sources import Item

if TYPE_CHECKING:  # torch is imported where it is used (a fast CLI start)
    import torch


@dataclass(frozen=True)
class Chunk:
    id: int
    items: tuple[Item, ...]


@dataclass
class LoadedChunk:
    """A chunk as read: the images that loaded (N,3,H,W on the CPU, in [0,1], at the model's input size), their
    items, and the items that could not be read with the reason."""

    id: int
    items: list[Item]
    images: "torch.Tensor | None"
    failed: list[tuple[Item, str]] = field(default_factory=list)
    error: str | None = None  # a problem with the whole chunk (images that cannot share a batch)


def make_chunks(items: Sequence[Item], size: int) -> list[Chunk]:
    if size < 1:
        raise DeepprobeError(f"--batch-size must be at least 1, got {size}")
    return [Chunk(c, tuple(items[start:start + size])) for c, start in enumerate(range(0, len(items), size))]


class _ChunkImages:
    """Map-style dataset: element k is the k-th chunk to process, loaded whole (runs in a worker process)."""

    def __init__(self, chunks: Sequence[Chunk], preprocess, tensors=None):
        self.chunks = list(chunks)
        self.preprocess = preprocess
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.chunks)

    def _load(self, item: Item):
        from ..io import read_image

        image = self.tensors[item.index:item.index + 1] if self.tensors is not None else read_image(item.path)
        return self.preprocess.geometry(image.float()) if self.preprocess is not None else image.float()

    def __getitem__(self, k: int) -> LoadedChunk:
        import torch

        chunk = self.chunks[k]
        images, loaded, failed = [], [], []
        for item in chunk.items:
            try:
                images.append(self._load(item))
                loaded.append(item)
            except ImageError as exc:  # the message starts with the path, which the record holds already
                failed.append((item, str(exc).removeprefix(f"{item.path}: ")))
        if not images:
            return LoadedChunk(chunk.id, [], None, failed)
        shapes = {tuple(im.shape[-2:]) for im in images}
        if len(shapes) > 1:
            return LoadedChunk(chunk.id, [], None, failed,
                               error=f"images of different sizes {sorted(shapes)[:3]} cannot share a batch: this "
                                     f"model keeps each image's size, so use --batch-size 1 or resize the data")
        return LoadedChunk(chunk.id, loaded, torch.cat(images).cpu(), failed)


def _whole(chunk: LoadedChunk) -> LoadedChunk:
    return chunk  # each dataset element is already a batch (module level, so spawned workers can pickle it)


def stream(chunks: Sequence[Chunk], preprocess, tensors=None, workers: int = 0) -> Iterator[LoadedChunk]:
    """Yield the chunks in order, read ahead by `workers` DataLoader processes (0: in this process)."""
    import torch
    from torch.utils.data import DataLoader

    if not chunks:
        return
    workers = 0 if tensors is not None else max(0, int(workers))  # tensors are in memory already
    # its own generator: a DataLoader otherwise draws its workers' base seed from the caller's global one
    loader = DataLoader(_ChunkImages(chunks, preprocess, tensors), batch_size=None, shuffle=False,
                        num_workers=min(workers, len(chunks)), collate_fn=_whole,
                        prefetch_factor=2 if workers else None, generator=torch.Generator())
    for loaded in loader:
        if loaded.error:
            raise DeepprobeError(loaded.error)
        yield loaded
