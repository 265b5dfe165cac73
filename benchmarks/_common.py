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


def add_machine_args(parser) -> None:
    """--device and --threads, which every benchmark takes (run_all.sh passes them through)."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def apply_threads(args) -> None:
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
