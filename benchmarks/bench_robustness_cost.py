"""What a `deepprobe robustness` run costs, and what the data layer adds to the attacks.

1. Overhead of the runner: the standard cascade (AutoAttack "standard") at 4/255 on the five example photos,
   once as a bare `robust_batch` call on tensors already in memory, once through `deepprobe robustness` (files
   read by the DataLoader, part file fsynced, 8-bit re-check, merge, summary, plot).
2. Per-image cost of each attack when the image stays robust (it then runs its whole budget): measured at
   eps 0.4/255, where no image on the 8-bit grid lies in the ball but the clean one, with small budgets, and
   divided by the steps x targets (or queries) spent. The standard cascade's cost per robust image follows.
3. The estimate for RobustBench's ImageNet protocol (5,000 images at 4/255) on this machine.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

import deepprobe as dp
from deepprobe.options.attacks import AttackSettings
from deepprobe.techniques.attacks import robust_batch

from _common import EXAMPLES, add_machine_args, apply_threads, timed

STANDARD = AttackSettings()
SMALL = dict(steps=5, targets=2, queries=100)  # budgets for the per-unit measurement


def command(options: list[str], n: int, device: torch.device) -> float:
    """Seconds of `deepprobe robustness examples/ ...` in this process (the model is cached by then)."""
    from typer.testing import CliRunner

    from deepprobe.cli import app

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        res = CliRunner().invoke(app, ["robustness", str(EXAMPLES), *options, "--batch-size", str(n),
                                       "--workers", "1", "--device", str(device), "--out", folder, "-q"])
        seconds = time.perf_counter() - start
    assert res.exit_code == 0, res.output
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_machine_args(parser)
    args = parser.parse_args()
    apply_threads(args)
    device = torch.device(args.device)
    probe = dp.load_model("efficientnet_lite0", device=str(device))
    paths = sorted(EXAMPLES.glob("*.jpg"))
    x = torch.cat([probe.load_image(p) for p in paths])
    labels = probe.predict(x).argmax(1)
    seeds = list(range(len(paths)))
    n = len(paths)

    out = {}
    bare = timed(lambda: out.update(r=robust_batch(probe, x, labels, eps=[4 / 255], cascade=["autoattack"],
                                                   settings=STANDARD, seeds=seeds)), device)
    broken = sum(not r["eps"]["0.01568627"]["robust"] for r in out["r"].records)
    full = command(["--eps", "4/255"], n, device)
    fixed = command(["--eps", "0"], n, device)  # no attack: reading, re-check, merge, summary, plot
    print(f"standard cascade at 4/255, {n} photos (Lite0 breaks {broken}/{n}): bare robust_batch {bare:.2f} s "
          f"({bare / n:.2f} s/image); `deepprobe robustness` {full:.2f} s, ratio {full / bare:.2f}x; the same "
          f"command at eps 0 (everything but the attacks) {fixed:.2f} s")

    small = AttackSettings(**SMALL)
    unit = {}
    for name, units in (("apgd-ce", small.steps), ("apgd-t", small.steps * small.targets),
                        ("fab-t", small.steps * small.targets), ("square", small.queries)):
        seconds = timed(lambda: robust_batch(probe, x, labels, eps=[0.4 / 255], cascade=[name], settings=small,
                                             seeds=seeds), device)
        unit[name] = seconds / (n * units)
        print(f"{name}: {unit[name] * 1000:.1f} ms per image and {'query' if name == 'square' else 'step x target'}"
              f" (robust images, {n} per batch)")
    full_robust = (unit["apgd-ce"] * STANDARD.steps + unit["apgd-t"] * STANDARD.steps * STANDARD.targets
                   + unit["fab-t"] * STANDARD.steps * STANDARD.targets + unit["square"] * STANDARD.queries)
    print(f"standard cascade, one image that stays robust: {full_robust:.0f} s "
          f"(apgd-ce {unit['apgd-ce'] * STANDARD.steps:.0f} s, apgd-t "
          f"{unit['apgd-t'] * STANDARD.steps * STANDARD.targets:.0f} s, fab-t "
          f"{unit['fab-t'] * STANDARD.steps * STANDARD.targets:.0f} s, square {unit['square'] * STANDARD.queries:.0f} s)")
    for robust in (0.0, 0.5):
        hours = 5000 * (robust * full_robust + (1 - robust) * bare / n) / 3600
        print(f"5,000 images at 4/255, robust accuracy {robust:.0%}: about {hours:.1f} h on this machine")


if __name__ == "__main__":
    main()
