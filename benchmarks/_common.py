"""What every benchmark script shares: the example photos and a wall-clock timer that waits for the GPU."""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

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


def clocks(fn, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) that `fn()` takes. On a shared machine the CPU time of a
    single-threaded run is the steadier figure: other processes' load stretches wall time, not CPU time."""
    cpu = time.process_time()
    wall = timed(fn, device)
    return wall, time.process_time() - cpu


def add_machine_args(parser) -> None:
    """--device and --threads, which every benchmark takes (run_all.sh passes them through)."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def apply_threads(args) -> None:
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)


def photos(bundle, n: int) -> torch.Tensor:
    """n different 224 images from the example photos: as they are, mirrored, and zoomed into a corner."""
    base = [bundle.load_image(p) for p in sorted(EXAMPLES.glob("*.jpg"))]
    out = []
    for i in range(n):
        x = base[i % len(base)]
        variant = (i // len(base)) % 4
        if variant == 1:
            x = x.flip(-1)
        elif variant >= 2:
            o = 32 if variant == 2 else 0
            x = F.interpolate(x[..., o:o + 192, o:o + 192], size=(224, 224), mode="bilinear", align_corners=False)
        out.append(x)
    return torch.cat(out)
