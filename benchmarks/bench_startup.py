"""CLI start-up: `deepprobe --help`, `deepprobe classify --help`, and time to the first result of a real run.

Each figure is the median wall time of fresh processes (what a user waits for at the prompt), the commands taken
in turns, next to the reference it is bounded by: a bare `python -c pass` for the help screens (they must not import torch) and
`python -c "import torch"` for the first classification (torch's import is most of it).

    python benchmarks/bench_startup.py [--repeats 5] [--device cpu] [--threads N]   # --device: of the real run

--threads sets OMP_NUM_THREADS for every process: on shared, oversubscribed cores a two-thread forward pass spends
seconds waiting for the other thread, which measures the neighbours rather than the start-up.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def deepprobe_exe() -> list[str]:
    """The console script beside this interpreter (the venv's), else `python -m deepprobe.cli` style."""
    beside = Path(sys.executable).with_name("deepprobe")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("deepprobe")
    if found:
        return [found]
    return [sys.executable, "-c", "from deepprobe.cli import app; app()"]


def interleaved(commands: dict[str, list[str]], repeats: int) -> dict[str, float]:
    """Median seconds of `repeats` fresh runs of each command, taken in turns (a, b, c, a, b, c, ...) after one
    warm-up round that fills the OS file cache: on a shared machine a burst of load then hits every command
    alike, so the ratios hold where the absolute times drift."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for round_ in range(repeats + 1):
        for name, argv in commands.items():
            t = time.perf_counter()
            subprocess.run(argv, cwd=ROOT, capture_output=True, check=True)
            if round_:
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(values) for name, values in times.items()}


def torch_free_help() -> bool:
    """`deepprobe --help` must not import torch (checked in the same way the test does)."""
    code = ("import sys; from typer.testing import CliRunner; from deepprobe.cli import app; "
            "CliRunner().invoke(app, ['--help']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip() == "False"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="device of the real run (cuda: includes CUDA's start-up)")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every run (default: inherited)")
    args = ap.parse_args()
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the subprocesses inherit it
    exe = deepprobe_exe()
    out = tempfile.mkdtemp(prefix="bench-startup-")  # classify writes no file for a classifier; kept apart anyway
    t = interleaved({
        "python": [sys.executable, "-c", "pass"],
        "torch": [sys.executable, "-c", "import torch"],
        "help": [*exe, "--help"],
        "classify_help": [*exe, "classify", "--help"],
        "classify": [*exe, "classify", str(ROOT / "examples" / "cat.jpg"), "--quiet", "--device", args.device,
                     "--out", out, "--force"],
    }, args.repeats)
    shutil.rmtree(out, ignore_errors=True)
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"fresh processes, median of {args.repeats} interleaved rounds, OMP_NUM_THREADS={threads}; "
          f"torch-free --help: {torch_free_help()}")
    print(f"  python -c pass                      {t['python'] * 1e3:7.0f} ms")
    print(f"  python -c 'import torch'            {t['torch'] * 1e3:7.0f} ms")
    print(f"  deepprobe --help                    {t['help'] * 1e3:7.0f} ms   ratio to bare python "
          f"{t['help'] / t['python']:.1f}x")
    print(f"  deepprobe classify --help           {t['classify_help'] * 1e3:7.0f} ms   ratio to bare python "
          f"{t['classify_help'] / t['python']:.1f}x")
    print(f"  deepprobe classify examples/cat.jpg {t['classify'] * 1e3:7.0f} ms   ratio to 'import torch' "
          f"{t['classify'] / t['torch']:.2f}x  (time to first result, --device {args.device})")


if __name__ == "__main__":
    main()
