"""torchrun awareness: one process per rank, its rank/world from the environment, a shard, a barrier.

The same command runs unchanged alone or under `torchrun --nproc-per-node K` (and multi-node): torchrun sets
RANK, WORLD_SIZE and LOCAL_RANK; each rank then works on its own device (CUDA: the LOCAL_RANK-th GPU, nccl;
otherwise the CPU, gloo). Nothing here schedules work: the shard of a rank is a fixed rule (chunk c belongs to
rank c % world), so results never depend on timing.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

# Ranks wait for the slowest one at the end; a crashed rank is torn down by torchrun, so a long wait is safe.
BARRIER_TIMEOUT = datetime.timedelta(hours=24)


@dataclass(frozen=True)
class Context:
    """Where this process stands: rank among `world` processes, its GPU index on the node, its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "auto"
    backend: str | None = None  # None: no process group (a single process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    def owns(self, chunk_id: int) -> bool:
        """The fixed shard: chunk c belongs to rank c % world."""
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


def init(device: str = "auto") -> Context:
    """Join torchrun's process group when there is one (nccl on CUDA, gloo otherwise); the device a rank
    should use replaces `device` ("auto"/"cuda" -> the LOCAL_RANK-th GPU)."""
    rank, world, local_rank = from_env()
    if world <= 1:
        return Context(device=device)
    import torch
    import torch.distributed as dist

    wants_cuda = (device or "auto").split(":")[0] in ("auto", "cuda") and torch.cuda.is_available()
    if wants_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    elif (device or "auto") == "auto":
        device = "cpu"
    backend = "nccl" if wants_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=BARRIER_TIMEOUT)
    return Context(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, device=device,
                   backend=dist.get_backend())


def barrier(ctx: Context) -> None:
    """Wait until every rank got here (no-op alone)."""
    if not ctx.distributed:
        return
    import torch.distributed as dist

    if ctx.backend == "nccl":
        dist.barrier(device_ids=[ctx.local_rank])
    else:
        dist.barrier()


def gather(value: Any, ctx: Context) -> list[Any]:
    """Every rank's `value` (picklable), in rank order, on every rank ([value] alone)."""
    if not ctx.distributed:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, value)
    return out


def shutdown(ctx: Context) -> None:
    """Leave the process group (so torchrun sees a clean exit)."""
    if ctx.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
