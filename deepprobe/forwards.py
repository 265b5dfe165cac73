"""How full a model's batches were: forward passes and the images in them, counted per named stage.

On a GPU a pass over half a batch costs about as much as a full one, so a run that sends its images through the
model in small groups pays for capacity it does not use. `ForwardCount` counts with a forward pre-hook on the
network (no change to the model or to results); `occupancy` turns the counts into images per pass / batch size.

    count = ForwardCount()
    with count.watching(bundle.net), count.during("apgd-ce"):
        ...                                  # every bundle.net(x) call adds 1 pass and len(x) images
    count.take()                             # {"apgd-ce": {"passes": 412, "images": 10298}}; counts restart
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class ForwardCount:
    """Passes and images through the watched modules, under the stage named last by `during` (none: not counted)."""

    def __init__(self):
        self.counts: dict[str, dict[str, int]] = {}
        self.stage: str | None = None

    def _hook(self, _module, args) -> None:
        if self.stage is None or not args or not hasattr(args[0], "shape"):
            return
        entry = self.counts.setdefault(self.stage, {"passes": 0, "images": 0})
        entry["passes"] += 1
        entry["images"] += int(args[0].shape[0])

    @contextlib.contextmanager
    def watching(self, net: Any) -> Iterator["ForwardCount"]:
        """Count every call of `net` (copies of it made meanwhile, e.g. a randomized one, count too) until the end."""
        handle = net.register_forward_pre_hook(self._hook)
        try:
            yield self
        finally:
            handle.remove()

    @contextlib.contextmanager
    def during(self, stage: str) -> Iterator[None]:
        """Count the passes made inside the block under `stage`."""
        before, self.stage = self.stage, stage
        try:
            yield
        finally:
            self.stage = before

    def take(self) -> dict[str, dict[str, int]]:
        """The counts so far, and a fresh start."""
        out, self.counts = self.counts, {}
        return out


def occupancy(counts: dict[str, dict[str, int]], batch_size: int) -> dict[str, float | None]:
    """Per stage: mean images per forward pass / batch_size (1.0: every pass full); "all" over every stage."""
    def share(passes: int, images: int) -> float | None:
        return round(images / (passes * batch_size), 4) if passes else None

    out = {stage: share(c.get("passes", 0), c.get("images", 0)) for stage, c in counts.items()}
    out["all"] = share(sum(c.get("passes", 0) for c in counts.values()),
                       sum(c.get("images", 0) for c in counts.values()))
    return out
