"""What every benchmark script shares: the example photos and a wall-clock timer that waits for the GPU."""
from __future__ import annotations

import time
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def timed(fn, device: torch.device) -> float:
    """Seconds `fn()` takes, synchronizing CUDA before and after so queued kernels are counted."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start
