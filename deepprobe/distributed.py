"""torchrun awareness: one process per rank, its rank/world from the environment, work handed out on demand, and
waits that end when a rank dies or hangs.

The same command runs unchanged alone or under `torchrun --nproc-per-node K` (and multi-node): torchrun sets
RANK, WORLD_SIZE and LOCAL_RANK; each rank then works on its own device (CUDA: the LOCAL_RANK-th GPU, nccl,
or GPUs shared round-robin over gloo when a node runs more ranks than it has GPUs; otherwise the CPU, gloo).

Work is handed out by a shared counter in torch.distributed's store (`Queue`): a rank that finishes early takes
the next unit, so a harder share does not leave the others idle. Which rank ran a unit never changes its results
(units and per-image seeds are fixed by the data alone).

Ranks wait for each other twice per run (before the work, for rank 0 to set up the run folder; after it, for
the merge). Those waits watch the other ranks: each rank's heartbeat thread posts a beat every HEARTBEAT_S and
the count of work it has done (`progressed()`), and a wait ends with `RankFailed` on every rank still alive
when a rank's beats stop for DEAD_AFTER_S (or `rank_timeout`, if shorter: the process or its node died) or its
work count stands still for `rank_timeout` (it hangs). On a single node torchrun itself stops every rank with
SIGTERM when one dies; `on_sigterm` turns that into the same one-line exit.
"""
from __future__ import annotations

import datetime
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import DeepprobeError

DEFAULT_RANK_TIMEOUT = 30 * 60.0  # seconds a rank may go without progress before the others give up on it
HEARTBEAT_S = 2.0  # how often a rank says it is alive
DEAD_AFTER_S = 120.0  # beats missing this long: the rank (or its node) is gone
POLL_S = 0.25  # how often a waiting rank looks at the others
_PREFIX = "deepprobe"


class RankFailed(DeepprobeError):
    """Another rank died, hung, or the run was stopped from outside: this rank ends too (finished work is kept)."""

    exit_code = 1


@dataclass(frozen=True)
class Context:
    """Where this process stands: rank among `world` processes, its GPU index on the node, its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "auto"
    backend: str | None = None  # None: no process group (a single process)
    created: bool = False  # this module started the process group (and so ends it in `shutdown`)
    rank_timeout: float = DEFAULT_RANK_TIMEOUT

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    def owns(self, chunk_id: int) -> bool:
        """A fixed shard (chunk c to rank c % world), for callers that want one; the data runner hands work out
        on demand instead (`Queue`)."""
        return chunk_id % self.world == self.rank


SINGLE = Context()


def from_env() -> tuple[int, int, int]:
    """(rank, world, local_rank) as torchrun sets them; (0, 1, 0) when run alone."""
    def number(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            return default

    return number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0)


def local_world(world: int) -> int:
    """Processes on this node (torchrun's LOCAL_WORLD_SIZE; the whole world when it is not set)."""
    try:
        return int(os.environ.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        return world


def init(device: str = "auto", rank_timeout: float = DEFAULT_RANK_TIMEOUT) -> Context:
    """Join torchrun's process group when there is one (nccl on CUDA, gloo otherwise or when ranks share GPUs);
    the device a rank should use replaces `device` ("auto"/"cuda" -> GPU LOCAL_RANK modulo the GPU count).
    `rank_timeout`: seconds without progress from a rank after which the others stop waiting for it."""
    if not rank_timeout > 0:
        raise DeepprobeError(f"--rank-timeout must be more than 0 seconds, got {rank_timeout}")
    rank, world, local_rank = from_env()
    if world <= 1:
        return Context(device=device, rank_timeout=rank_timeout)
    import torch
    import torch.distributed as dist

    wants_cuda = (device or "auto").split(":")[0] in ("auto", "cuda") and torch.cuda.is_available()
    backend = "gloo"
    if wants_cuda:
        gpus = torch.cuda.device_count()
        torch.cuda.set_device(local_rank % gpus)
        device = f"cuda:{local_rank % gpus}"
        # nccl wants one GPU per rank; more ranks than GPUs on a node share them round-robin over gloo (the ranks
        # only exchange a few small objects: who finished, and the part files are on disk)
        backend = "nccl" if local_world(world) <= gpus else "gloo"
    elif (device or "auto") == "auto":
        device = "cpu"
    created = not dist.is_initialized()
    if created:
        # collectives run only once every rank is known to be there (`barrier` below), so they are quick
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=rank_timeout))
    ctx = Context(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, device=device,
                  backend=dist.get_backend(), created=created, rank_timeout=rank_timeout)
    _Heartbeat.start(ctx)
    return ctx


# ----- the store, heartbeats and progress --------------------------------------------------------------------
def _store():
    import torch.distributed.distributed_c10d as c10d

    return c10d._get_default_store()  # the rendezvous' key-value store every rank reaches (TCPStore)


def _key(*parts: object) -> str:
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # a restarted job starts from fresh keys
    return "/".join([_PREFIX, attempt, *map(str, parts)])


_progress = 0


def progressed(amount: int = 1) -> None:
    """Count work done by this rank (a batch, an attack step): the others stop waiting only for a rank whose count
    stands still for the rank timeout. Cheap; the heartbeat thread publishes it."""
    global _progress
    _progress += amount


class _Heartbeat:
    """A daemon thread posting this rank's beat and work count to the store every HEARTBEAT_S."""

    thread: threading.Thread | None = None

    @classmethod
    def start(cls, ctx: Context) -> None:
        if cls.thread is not None and cls.thread.is_alive():
            return
        store = _store()

        def beat() -> None:
            count = 0
            while True:
                count += 1
                try:
                    store.set(_key("alive", ctx.rank), str(count))
                    store.set(_key("progress", ctx.rank), str(_progress))
                except Exception:  # noqa: BLE001 - the store is gone (its node died): waits report it
                    return
                time.sleep(HEARTBEAT_S)

        cls.thread = threading.Thread(target=beat, name="deepprobe-heartbeat", daemon=True)
        cls.thread.start()


class _Watch:
    """What a waiting rank knows of the others: when each one's beat and work count last changed."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.store = _store()
        now = time.monotonic()
        self.seen = {r: (None, None, now, now) for r in range(ctx.world)}  # beat, progress, beat at, progress at

    def _value(self, name: str, rank: int) -> str | None:
        key = _key(name, rank)
        return self.store.get(key).decode() if self.store.check([key]) else None

    def check(self, ranks) -> None:
        """Raise RankFailed for the first of `ranks` that stopped beating or stopped making progress."""
        now, timeout = time.monotonic(), self.ctx.rank_timeout
        dead_after = min(DEAD_AFTER_S, timeout)
        for r in ranks:
            beat, progress = self._value("alive", r), self._value("progress", r)
            old_beat, old_progress, beat_at, progress_at = self.seen[r]
            beat_at = now if beat != old_beat else beat_at
            progress_at = now if progress != old_progress else progress_at
            self.seen[r] = (beat, progress, beat_at, progress_at)
            if now - beat_at > dead_after:
                raise RankFailed(f"rank {r} stopped answering {now - beat_at:.0f} s ago (its process or node "
                                 f"died)")
            if now - progress_at > timeout:
                raise RankFailed(f"rank {r} made no progress for {now - progress_at:.0f} s (--rank-timeout "
                                 f"{timeout:g})")


def _lost_store(exc: Exception) -> RankFailed:
    return RankFailed(f"lost the connection to the other ranks, one of them died? ({type(exc).__name__}: "
                      f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no details'})")


_barriers = 0


def barrier(ctx: Context) -> None:
    """Wait until every rank got here (no-op alone), watching the missing ones: RankFailed when one of them died
    or hangs (see the module docstring)."""
    global _barriers
    if not ctx.distributed:
        return
    _barriers += 1  # every rank passes the same barriers in the same order: the count names this one
    try:
        store = _store()
        count, failed = _key("barrier", _barriers, "count"), _key("failed")
        store.set(_key("barrier", _barriers, ctx.rank), "1")
        arrived, watch, looked = store.add(count, 1), None, 0.0
        while True:
            if store.check([failed]):  # a rank that gave up (it had arrived: the count alone would let us pass)
                raise RankFailed(store.get(failed).decode())
            if arrived >= ctx.world:
                return
            if time.monotonic() - looked >= HEARTBEAT_S:  # who is missing, and are they alive? (world requests)
                keys = [_key("barrier", _barriers, r) for r in range(ctx.world)]
                watch = watch or _Watch(ctx)
                try:
                    watch.check([r for r, key in enumerate(keys) if not store.check([key])])
                except RankFailed as exc:
                    store.set(failed, f"rank {ctx.rank} gave up: {exc}")
                    raise
                looked = time.monotonic()
            time.sleep(POLL_S)
            arrived = store.add(count, 0)  # one request per poll, however many ranks
    except RankFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - the store's errors (connection reset, timeout) differ by version
        raise _lost_store(exc) from None


def gather(value: Any, ctx: Context) -> list[Any]:
    """Every rank's `value` (picklable), in rank order, on every rank ([value] alone). Call it right after a
    `barrier`, so that every rank is there."""
    if not ctx.distributed:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world
    try:
        dist.all_gather_object(out, value)
    except Exception as exc:  # noqa: BLE001 - a rank left between the barrier and here
        raise _lost_store(exc) from None
    return out


def broadcast(value: Any, ctx: Context) -> Any:
    """Rank 0's `value` on every rank (after a `barrier`)."""
    if not ctx.distributed:
        return value
    import torch.distributed as dist

    box = [value if ctx.is_main else None]
    try:
        dist.broadcast_object_list(box, src=0)
    except Exception as exc:  # noqa: BLE001
        raise _lost_store(exc) from None
    return box[0]


# ----- work handed out on demand ---------------------------------------------------------------------------
_queues = 0


class Queue:
    """Units 0..count-1 handed out one at a time to whichever rank asks first (a counter in the store); alone,
    all of them in order. Every rank creates the queue at the same point of the run."""

    def __init__(self, count: int, ctx: Context):
        global _queues
        _queues += 1
        self.count, self.ctx = count, ctx
        self.key = _key("queue", _queues)

    def __iter__(self) -> Iterator[int]:
        if not self.ctx.distributed:
            yield from range(self.count)
            return
        store = _store()
        while True:
            try:
                unit = store.add(self.key, 1) - 1
            except Exception as exc:  # noqa: BLE001
                raise _lost_store(exc) from None
            if unit >= self.count:
                return
            yield unit


def add(ctx: Context, key: str, amount: int) -> int:
    """Add `amount` to a counter every rank shares (under `key`, e.g. a Queue's key plus a name); its new total."""
    try:
        return int(_store().add(key, int(amount)))
    except Exception as exc:  # noqa: BLE001
        raise _lost_store(exc) from None


# ----- ending ------------------------------------------------------------------------------------------------
def on_sigterm(ctx: Context):
    """Under torchrun, make SIGTERM (what torchrun sends every rank when one fails) raise RankFailed in the main
    thread, so the rank ends with one line instead of dying silently; returns a function that restores the old
    handler. Alone: nothing changes."""
    if not ctx.distributed or threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, _frame):
        error = RankFailed("stopped by SIGTERM (torchrun stops every rank when one fails)")
        error.exit_code = 128 + signum
        raise error

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


def shutdown(ctx: Context) -> None:
    """Leave the process group this module started (so torchrun sees a clean exit); one the caller started is
    left to the caller."""
    if ctx.created:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
