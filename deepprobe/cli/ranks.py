"""One process of a torchrun job as a command sees it: join the group, take this rank's device, let rank 0 speak."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def ranked(run, rank_timeout: float | None = None) -> Iterator["distributed.Context"]:  # noqa: F821 - lazy import
    """Join torchrun's process group (a no-op alone), put this rank on its own device before `run.bundle()`,
    silence every rank but 0 (one bar, one table, one JSON summary), turn torchrun's SIGTERM into a one-line exit,
    and leave the group at the end. `rank_timeout`: seconds without progress from another rank before this one
    stops waiting for it (--rank-timeout)."""
    from .. import distributed

    ctx = distributed.init(run.common.device, rank_timeout or distributed.DEFAULT_RANK_TIMEOUT)
    restore = distributed.on_sigterm(ctx)
    try:
        run.common.device = ctx.device
        if not ctx.is_main:
            run.common.quiet, run.common.json = True, False
        yield ctx
    finally:
        restore()
        distributed.shutdown(ctx)


def skip_note(ctx):
    """The data runner's `skip` hook: one line per unreadable image, naming the rank under torchrun."""
    from rich.markup import escape

    from .common import err_console

    def note(item, reason: str) -> None:
        who = f"[rank {ctx.rank}] " if ctx.world > 1 else ""
        err_console.print(f"[yellow]{who}skipped[/yellow] {escape(str(item.path))}: {escape(reason)}")
    return note
