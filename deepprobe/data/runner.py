"""The generic data-set loop: stream fixed chunks, call a per-batch function, keep each chunk's records.

    outcome = run_dataset(dataset, process, batch_size=32, out="runs/x", config={...}, ctx=distributed.init())

`process(batch) -> list[dict]` gets a `Batch` (images on the CPU, labels, one seed per image) and returns one
record per image; the runner adds `index`, `path` and `label` (a record may set `label` itself, e.g. the clean
prediction when the data has no labels). With `pool=P`, the unit of work is P consecutive chunks and `process`
gets their Batches as a list (returning one list of records per batch): work that shrinks as it goes (an attack
cascade) can then regroup what is left of P batches into full ones.

With `out`, every finished unit is appended to the rank's part file (one line per chunk) before the next one
starts, a folder holding the same configuration is resumed (finished units are skipped), and rank 0 merges all
parts into results.jsonl once every rank is done. Without `out`, records stay in memory. Under torchrun the
units are handed out on demand (`distributed.Queue`), and the waits for the other ranks end with one line when
a rank dies or hangs. Per-image seeds depend only on (seed, image index), and a unit always holds the same
images, so results do not depend on the number of processes, on which rank ran what, on interruptions or on
resuming.
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
from .loader import Chunk, LoadedChunk, make_chunks, stream
from .sources import Dataset, Item
from .store import RunFolder, add_stats


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
    stats: dict = field(default_factory=dict)  # Hooks.stats summed over every finished unit (earlier runs too)
    ranks: list[dict] = field(default_factory=list)  # per rank of this run: units, images, busy and waiting time
    pool: int = 1  # chunks per unit of work (1 for a folder started before pools, whatever was asked)

    def records(self) -> Iterator[dict]:
        """Every image's record in index order (read from results.jsonl one at a time when there is a folder)."""
        if self.memory is not None:
            yield from self.memory
        elif self.folder is not None and self.folder.results.is_file():
            yield from self.folder.records()


@dataclass
class Hooks:
    """Optional callbacks: `start(images_left, done_before)`, `progress(images)` after each unit (under torchrun,
    on rank 0: the images every rank finished since the last call), `skip(item, reason)` for each unreadable file, `chunk_done(batch, records)` after a chunk is safely stored."""

    start: Callable[[int, int], None] | None = None
    progress: Callable[[int], None] | None = None
    skip: Callable[[Item, str], None] | None = None
    chunk_done: Callable[[Batch, list[dict]], None] | None = None
    stats: Callable[[], dict] | None = None  # numbers about the unit just processed, summed over the run


def run_dataset(dataset: Dataset, process: Callable, *, batch_size: int, seed: int = 0,
                out: str | Path | None = None, config: dict | None = None, force: bool = False,
                preprocess=None, workers: int = 0, ctx: distributed.Context = distributed.SINGLE,
                hooks: Hooks | None = None, also_remove: tuple[str, ...] = (),
                invocation: dict | None = None, pool: int = 1) -> Outcome:
    """Run `process` over every unit of `pool` chunks not finished yet; see the module docstring. `process` takes
    one Batch when pool is 1, else a list of them. `also_remove`: folders under `out` that belong to a run `force`
    replaces; `invocation`: how the run was started (kept in config.json, e.g. for a command's --resume; not
    compared). The pool is part of the configuration (P > 1 is stored as "pool"); a folder written before pools
    existed is resumed one chunk at a time, as it was started."""
    hooks = hooks or Hooks()
    started = time.perf_counter()
    listwise = pool > 1  # how `process` is called, whatever pool the folder ends up with
    chunks = make_chunks(dataset.items, batch_size)
    folder = RunFolder(out, ctx.rank) if out is not None else None
    finished: set[int] = set()
    try:
        if folder is not None:
            config, pool = _layout(folder, dict(config or {}), pool)
            state = folder.check(config, force)
            if ctx.is_main:
                folder.prepare(config, state, also_remove, invocation)
            distributed.barrier(ctx)
            finished = distributed.broadcast(set(folder.done()) if ctx.is_main else None, ctx)
        units = [chunks[k:k + pool] for k in range(0, len(chunks), max(1, pool))]
        todo = [unit for unit in units if not all(c.id in finished for c in unit)]
        done_before = sum(len(c.items) for c in chunks if c.id in finished)
        if hooks.start:
            hooks.start(sum(len(c.items) for unit in todo for c in unit), done_before)  # (a torn unit is redone whole)
        queue = distributed.Queue(len(todo), ctx)
        work = _Work(dataset, process, pool, folder, ctx, hooks, seed, queue.key + "/images", listwise)
        try:
            for loaded in _loaded_units(todo, queue, preprocess, dataset.tensors, workers, ctx.distributed):
                work.unit(loaded)
        except KeyboardInterrupt:
            if ctx.distributed:
                raise  # torchrun stops every rank; finished units are on disk
            work.complete = False
        return _finish(dataset, work, done_before, started)
    except distributed.RankFailed as exc:
        kept = f"; finished batches are kept in {folder.root}: run the same command again to go on" if folder else ""
        failure = distributed.RankFailed(f"rank {ctx.rank} stops: {exc}{kept}")
        failure.exit_code = exc.exit_code
        raise failure from None


def _layout(folder: RunFolder, config: dict, pool: int) -> tuple[dict, int]:
    """The configuration to store and the pool to use: a folder written before pools (no "pool" in its stored
    configuration, the rest equal) keeps its one-chunk units."""
    pool = max(1, int(pool))
    if pool > 1:
        config["pool"] = pool
    stored = folder.stored_config()
    if stored is not None and "pool" not in stored and pool > 1:
        plain = {k: v for k, v in config.items() if k != "pool"}
        if folder.holds(plain):
            return plain, 1
    return config, pool


def _loaded_units(todo: list[list[Chunk]], queue: distributed.Queue, preprocess, tensors, workers: int,
                  dynamic: bool) -> Iterator[list[LoadedChunk]]:
    """Each unit's chunks as read. Alone, one stream reads ahead across units; under torchrun a unit is claimed
    from the shared queue only when this rank is ready for it (reading ahead would hold on to work another rank
    could start now), and its chunks are read by the workers then."""
    if not dynamic:
        loaded = stream([c for unit in todo for c in unit], preprocess, tensors, workers)
        for unit in todo:
            yield [next(loaded) for _ in unit]
        return
    for k in queue:
        yield list(stream(todo[k], preprocess, tensors, workers))


class _Work:
    """This rank's loop state: runs `process` on a unit, stores it, counts."""

    def __init__(self, dataset, process, pool, folder, ctx, hooks, seed, counter: str, listwise: bool):
        self.dataset, self.process, self.pool, self.folder, self.ctx, self.hooks = (dataset, process, pool, folder,
                                                                                     ctx, hooks)
        self.seed, self.counter = seed, counter  # counter: the store key of the images every rank finished
        self.listwise = listwise
        self.memory: list[dict] = []
        self.skipped: list[dict] = []
        self.stats: dict = {}
        self.processed = self.units = 0
        self.busy = 0.0
        self.complete = True
        self.shown = 0  # images (all ranks) the progress hook has heard of

    def unit(self, loaded: list[LoadedChunk]) -> None:
        import torch

        start = time.perf_counter()
        batches: list[Batch] = []
        for chunk in loaded:
            for item, reason in chunk.failed:
                if self.hooks.skip:
                    self.hooks.skip(item, reason)
            if chunk.items:
                labels = [item.label for item in chunk.items]
                batches.append(Batch(chunk.id, chunk.items, chunk.images,
                                     None if None in labels else torch.tensor(labels, dtype=torch.long),
                                     [item_seed(self.seed, item.index) for item in chunk.items]))
        if self.listwise:
            produced = self.process(batches) if batches else []
        else:
            produced = [self.process(batch) for batch in batches]
        if len(produced) != len(batches):
            raise RuntimeError(f"per-unit function returned {len(produced)} lists of records for {len(batches)} "
                               f"batches")
        by_chunk = {batch.chunk: (batch, records) for batch, records in zip(batches, produced)}
        lines, images, kept = [], 0, {}
        for chunk in loaded:
            skipped = [{"index": item.index, "path": item.path, "reason": reason} for item, reason in chunk.failed]
            batch, records = by_chunk.get(chunk.id, (None, []))
            if batch is not None and len(records) != len(batch.items):
                raise RuntimeError(f"per-batch function returned {len(records)} records for {len(batch.items)} "
                                   f"images")
            kept[chunk.id] = [{"index": item.index, "path": item.path, "label": item.label, **record}
                              for item, record in zip(batch.items if batch else [], records)]
            lines.append((chunk.id, kept[chunk.id], skipped))
            images += len(chunk.items) + len(chunk.failed)
        stats = self.hooks.stats() if self.hooks.stats else {}
        if self.folder is not None:
            self.folder.append_unit(lines, stats)
        else:
            for _, records, skipped in lines:
                self.memory += records
                self.skipped += skipped
            add_stats(self.stats, stats)
        self.processed += sum(len(records) for _, records, _ in lines)
        self.units += 1
        self.busy += time.perf_counter() - start
        distributed.progressed()
        if self.hooks.chunk_done:
            for batch in batches:
                self.hooks.chunk_done(batch, kept[batch.chunk])
        self.report(images)

    def report(self, images: int) -> None:
        """Progress: this rank's images alone; under torchrun rank 0 tells of every rank's (a store counter)."""
        if not self.ctx.distributed:
            if self.hooks.progress:
                self.hooks.progress(images)
            return
        total = distributed.add(self.ctx, self.counter, images)
        if self.ctx.is_main and self.hooks.progress and total > self.shown:
            self.hooks.progress(total - self.shown)
            self.shown = total


def _finish(dataset, work: _Work, done_before: int, started: float) -> Outcome:
    """After every rank is done: count, check that every chunk arrived, merge (rank 0)."""
    ctx, folder = work.ctx, work.folder
    waiting = time.perf_counter()
    distributed.barrier(ctx)
    waited = time.perf_counter() - waiting
    wall = time.perf_counter() - started
    mine = {"rank": ctx.rank, "units": work.units, "images": work.processed, "busy_s": round(work.busy, 3),
            "waited_s": round(waited, 3), "wall_s": round(wall, 3),
            "idle_fraction": round(waited / wall, 4) if wall > 0 else 0.0}
    gathered = distributed.gather((mine, work.processed, (work.memory, work.skipped, work.stats)
                                   if folder is None else None), ctx)
    if ctx.distributed:
        work.report(0)  # rank 0's bar: the last units of the other ranks
    outcome = Outcome(total=len(dataset.items), done_before=done_before,
                      processed=sum(processed for _, processed, _ in gathered), complete=work.complete,
                      folder=folder, is_main=ctx.is_main, ranks=[r for r, _, _ in gathered], pool=work.pool)
    if folder is None:
        outcome.memory = sorted((r for _, _, (part, _, _) in gathered for r in part), key=lambda r: r["index"])
        outcome.skipped = sorted((s for _, _, (_, part, _) in gathered for s in part), key=lambda s: s["index"])
        for _, _, (_, _, stats) in gathered:
            add_stats(outcome.stats, stats)
        outcome.count = len(outcome.memory)
    elif ctx.is_main:
        outcome.count, outcome.skipped, outcome.stats = folder.write_results()
        finished = outcome.count + len(outcome.skipped)
        if work.complete and finished != len(dataset.items):
            missing = len(dataset.items) - finished
            raise DeepprobeError(f"{missing} image(s) have no results in {folder.root} after every rank finished: "
                                 f"is --out on a file system that every node shares?")
    outcome.wall_s = time.perf_counter() - started
    return outcome
