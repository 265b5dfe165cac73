"""CLI start-up: `deepprobe --help`, `deepprobe classify --help`, and time to the first result of a real run.

Each figure is the median wall time of fresh processes (what a user waits for at the prompt), next to the
reference it is bounded by: a bare `python -c pass` for the help screens (they must not import torch) and
`python -c "import torch"` for the first classification (torch's import is most of it).

    python benchmarks/bench_startup.py [--repeats 5] [--device cpu]   # --device: of the real run
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
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


def wall(argv: list[str], repeats: int) -> float:
    """Median seconds of `repeats` fresh runs (after one warm-up run that fills the OS file cache)."""
    subprocess.run(argv, cwd=ROOT, capture_output=True, check=True)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


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
    args = ap.parse_args()
    exe = deepprobe_exe()
    python = wall([sys.executable, "-c", "pass"], args.repeats)
    torch_import = wall([sys.executable, "-c", "import torch"], args.repeats)
    help_all = wall([*exe, "--help"], args.repeats)
    help_classify = wall([*exe, "classify", "--help"], args.repeats)
    first = wall([*exe, "classify", str(ROOT / "examples" / "cat.jpg"), "--quiet", "--device", args.device],
                 max(1, args.repeats // 2))
    print(f"fresh processes, median of {args.repeats}; torch-free --help: {torch_free_help()}")
    print(f"  python -c pass                      {python * 1e3:7.0f} ms")
    print(f"  python -c 'import torch'            {torch_import * 1e3:7.0f} ms")
    print(f"  deepprobe --help                    {help_all * 1e3:7.0f} ms   ratio to bare python "
          f"{help_all / python:.1f}x")
    print(f"  deepprobe classify --help           {help_classify * 1e3:7.0f} ms   ratio to bare python "
          f"{help_classify / python:.1f}x")
    print(f"  deepprobe classify examples/cat.jpg {first * 1e3:7.0f} ms   ratio to 'import torch' "
          f"{first / torch_import:.1f}x  (time to first result, --device {args.device})")


if __name__ == "__main__":
    main()
