"""The generic data-set loop: stream fixed chunks, call a per-batch function, keep each chunk's records.

    outcome = run_dataset(dataset, process, batch_size=32, out="runs/x", config={...}, ctx=distributed.init())

`process(batch) -> list[dict]` gets a `Batch` (images on the CPU, labels, one seed per image) and returns one
record per image; the runner adds `index`, `path` and `label` (a record may set `label` itself, e.g. the clean
prediction when the data has no labels). With `out`, every finished chunk is appended to the rank's part file
before the next one starts, a folder holding the same configuration is resumed (finished chunks are skipped),
and rank 0 merges all parts into results.jsonl once every rank is done. Without `out`, records stay in memory.
Per-image seeds depend only on (seed, image index), and chunk c always holds the same images, so results do not
depend on the number of processes, on interruptions or on resuming.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import distributed
from ..errors import DeepprobeError
from .loader import make_chunks, stream
from .sources import Dataset, Item
from .store import RunFolder


def item_seed(seed: int, index: int) -> int:
    """A 63-bit seed for one image from the run's seed and the image's index (stable across runs and ranks)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass
class Batch:
    """What a per-batch function gets: one chunk's readable images."""

    chunk: int
    items: list[Item]
    images: Any  # (N,3,H,W) float tensor in [0,1] on the CPU, at the model's input size
    labels: Any  # (N,) long tensor, or None when the data has no labels (use the clean predictions)
    seeds: list[int]


@dataclass
class Outcome:
    """What a run left: on rank 0 the merged records (`records()`), the skipped files and the counts."""

    total: int  # images selected
    done_before: int  # images (and skipped files) finished by earlier runs into the same folder
    processed: int  # images processed by this call, all ranks together
    skipped: list[dict] = field(default_factory=list)  # {"index", "path", "reason"} of unreadable files
    count: int = 0  # images with a record (rank 0)
    complete: bool = True  # False when interrupted: run again to go on
    wall_s: float = 0.0
    folder: RunFolder | None = None
    memory: list[dict] | None = None
    is_main: bool = True

    def records(self) -> Iterator[dict]:
        """Every image's record in index order (read from results.jsonl one at a time when there is a folder)."""
        if self.memory is not None:
            yield from self.memory
        elif self.folder is not None and self.folder.results.is_file():
            yield from self.folder.records()


@dataclass
class Hooks:
    """Optional callbacks: `start(total_mine, done_before)`, `progress(images)` after each chunk, `skip(item,
    reason)` for each unreadable file, `chunk_done(batch, records)` after a chunk is safely stored."""

    start: Callable[[int, int], None] | None = None
    progress: Callable[[int], None] | None = None
    skip: Callable[[Item, str], None] | None = None
    chunk_done: Callable[[Batch, list[dict]], None] | None = None


def run_dataset(dataset: Dataset, process: Callable[[Batch], list[dict]], *, batch_size: int, seed: int = 0,
                out: str | Path | None = None, config: dict | None = None, force: bool = False,
                preprocess=None, workers: int = 0, ctx: distributed.Context = distributed.SINGLE,
                hooks: Hooks | None = None, also_remove: tuple[str, ...] = (),
                invocation: dict | None = None) -> Outcome:
    """Run `process` over every chunk this rank owns and has not finished yet; see the module docstring.
    `also_remove`: folders under `out` that belong to a run `force` replaces; `invocation`: how the run was
    started (kept in config.json, e.g. for a command's --resume; not compared)."""
    import torch

    hooks = hooks or Hooks()
    started = time.perf_counter()
    chunks = make_chunks(dataset.items, batch_size)
    folder = RunFolder(out, ctx.rank) if out is not None else None
    finished: set[int] = set()
    if folder is not None:
        state = folder.check(config or {}, force)
        if ctx.is_main:
            folder.prepare(config or {}, state, also_remove, invocation)
        distributed.barrier(ctx)
        finished = set(folder.done())
    mine = [c for c in chunks if ctx.owns(c.id) and c.id not in finished]
    done_before = sum(len(c.items) for c in chunks if c.id in finished)
    if hooks.start:
        hooks.start(sum(len(c.items) for c in mine), done_before)
    memory: list[dict] = []
    skipped_here: list[dict] = []
    processed, complete = 0, True
    try:
        for loaded in stream(mine, preprocess, dataset.tensors, workers):
            skipped = [{"index": item.index, "path": item.path, "reason": reason} for item, reason in loaded.failed]
            for item, reason in loaded.failed:
                if hooks.skip:
                    hooks.skip(item, reason)
            records: list[dict] = []
            batch = None
            if loaded.items:
                labels = [item.label for item in loaded.items]
                batch = Batch(loaded.id, loaded.items, loaded.images,
                              None if None in labels else torch.tensor(labels, dtype=torch.long),
                              [item_seed(seed, item.index) for item in loaded.items])
                produced = process(batch)
                if len(produced) != len(loaded.items):
                    raise RuntimeError(f"per-batch function returned {len(produced)} records for "
                                       f"{len(loaded.items)} images")
                records = [{"index": item.index, "path": item.path, "label": item.label, **record}
                           for item, record in zip(loaded.items, produced)]
            if folder is not None:
                folder.append(loaded.id, records, skipped)
            else:
                memory += records
                skipped_here += skipped
            processed += len(records)
            if batch is not None and hooks.chunk_done:
                hooks.chunk_done(batch, records)
            if hooks.progress:
                hooks.progress(len(loaded.items) + len(loaded.failed))
    except KeyboardInterrupt:
        if ctx.distributed:
            raise  # torchrun stops every rank; finished chunks are on disk
        complete = False
    return _finish(dataset, folder, ctx, memory, skipped_here, processed, complete, done_before, started)


def _finish(dataset, folder, ctx, memory, skipped_here, processed, complete, done_before, started) -> Outcome:
    """After every rank is done: count, check that every chunk arrived, merge (rank 0)."""
    distributed.barrier(ctx)
    processed = sum(distributed.gather(processed, ctx))
    outcome = Outcome(total=len(dataset.items), done_before=done_before, processed=processed, complete=complete,
                      folder=folder, is_main=ctx.is_main)
    if folder is None:
        gathered = distributed.gather((memory, skipped_here), ctx)
        outcome.memory = sorted((r for part, _ in gathered for r in part), key=lambda r: r["index"])
        outcome.skipped = sorted((s for _, part in gathered for s in part), key=lambda s: s["index"])
        outcome.count = len(outcome.memory)
    elif ctx.is_main:
        outcome.count, outcome.skipped = folder.write_results()
        finished = outcome.count + len(outcome.skipped)
        if complete and finished != len(dataset.items):
            missing = len(dataset.items) - finished
            raise DeepprobeError(f"{missing} image(s) have no results in {folder.root} after every rank finished: "
                                 f"is --out on a file system that every node shares?")
    outcome.wall_s = time.perf_counter() - started
    return outcome
