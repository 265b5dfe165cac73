"""How full the forward passes are, and how idle the ranks are: robustness pools, evaluate's shared passes, and
work handed out on demand under torchrun.

On a GPU a pass over half a batch costs about as much as a full one, so these figures are counts (images per
forward pass / batch size, from `deepprobe.forwards.ForwardCount`), the same on any device; the CPU times say
what the change costs where passes are not free.

    python benchmarks/bench_occupancy.py robustness [--images 256] [--batch-size 32] [--pools 1,16] [--queries 5000]
    python benchmarks/bench_occupancy.py evaluate [--images 8] [--batch-size 32]
    python benchmarks/bench_occupancy.py ranks [--images 24] [--steps 60]

robustness: the standard cascade at L-inf 8/255 on the adversarially trained 32x32 CNN of the tests
(`--module tests.robust_cnn`: `build`, `draw`, the fixture tests/fixtures/robust_cnn.pt), each --pools value in
turn, --repeats interleaved runs; medians of wall and CPU time, occupancy per attack, and whether every image's
verdict agrees between the pools. evaluate: Lite0 on --images photos, the default metrics, every perturbation
metric's plan run alone (one stream per metric and map, as before) vs all of a batch's plans in one stream.
ranks: 2 CPU processes under torchrun on a skewed data set (every other unit of work is attacked, the rest is
wrong already and costs nothing) with the tiny untrained CNN of the tests; each rank's idle fraction (time waiting
for the others at the end / its wall time) as run (work on demand), next to the fixed shard unit u -> rank u % 2
it replaced, estimated from the same run's per-image attack times.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from _common import EXAMPLES, add_machine_args, apply_threads, clocks, photos  # benchmarks/_common.py

import deepprobe as dp

ROOT = Path(__file__).resolve().parent.parent


def robustness(args) -> None:
    sys.path.insert(0, str(ROOT))
    module = importlib.import_module(args.module)
    weights = args.weights or str(Path(module.__file__).parent / "fixtures" / "robust_cnn.pt")
    probe = dp.load_model(f"python:{args.module}:build", weights=weights, device=args.device, input_size=32)
    x, y = module.draw(args.images, seed=args.seed)
    pools = [int(p) for p in args.pools.split(",")]
    times = {p: [] for p in pools}
    results = {}
    for _ in range(args.repeats):
        for pool in pools:
            def run():
                results[pool] = dp.robustness(probe, x, y, eps=8 / 255, batch_size=args.batch_size, pool=pool,
                                              queries=args.queries, seed=0)
            times[pool].append(clocks(run, probe.device))
    print(f"robustness: {args.images} images, batch {args.batch_size}, L-inf 8/255, {args.queries} queries, "
          f"{args.repeats} interleaved runs ({probe.device})")
    base = results[pools[0]]
    for pool in pools:
        res = results[pool]
        wall, cpu = (statistics.median(t[k] for t in times[pool]) for k in (0, 1))
        agree = sum(all(a["eps"][k]["robust"] == b["eps"][k]["robust"] and a["eps"][k]["broken_by"] ==
                        b["eps"][k]["broken_by"] for k in a["eps"]) for a, b in zip(base.records, res.records))
        print(f"  pool {pool}: wall {wall:.1f} s, CPU {cpu:.1f} s, clean {res.clean_accuracy:.3f}, robust "
              f"{list(res.robust_accuracy.values())[0]:.3f}, verdicts as pool {pools[0]}: {agree}/{res.n}")
        print(f"    occupancy {json.dumps(res.summary['occupancy'])}")
    for pool in pools[1:]:
        ratio = statistics.median(t[1] for t in times[pools[0]]) / statistics.median(t[1] for t in times[pool])
        print(f"RATIO robustness CPU time, pool {pools[0]} / pool {pool}: {ratio:.2f}x")


def evaluate(args) -> None:
    from deepprobe.explain.faithfulness import deletion_insertion_plan
    from deepprobe.explain.metrics.core import run_plans
    from deepprobe.explain.scoring import BASELINES, PLANS, _Context, explainer_for
    from deepprobe.forwards import ForwardCount, occupancy
    from deepprobe.options.evaluate import DEFAULT_METRICS, Options

    probe = dp.load_model("efficientnet_lite0", device=args.device)
    x = photos(probe, args.images).to(probe.device)
    targets = probe.predict(x).argmax(1)
    opts = Options(batch_size=args.batch_size, forward_batch=args.batch_size)
    seeds = list(range(args.images))
    names = ["gradcam", *BASELINES]
    maps = {n: explainer_for(n)(probe, x, targets, seeds) for n in names}
    c = _Context(probe, x, targets, seeds, None, opts, 0, None)

    def plans():
        out = [deletion_insertion_plan(x, [maps[n] for n in names], targets, opts.steps, seed=seeds,
                                       mean=probe.preprocess.mean)]
        return out + [PLANS[m](c, maps[n]) for m in DEFAULT_METRICS if m in PLANS for n in names]

    print(f"evaluate: Lite0, {args.images} photos, gradcam + random + edge, default perturbation metrics, "
          f"passes of {args.batch_size} ({probe.device})")
    for label, together in (("each metric and map alone (before)", False), ("one stream per batch", True)):
        count = ForwardCount()

        def run():
            with count.watching(probe.net), count.during("perturbations"):
                if together:
                    run_plans(probe.net, plans(), args.batch_size, probe.device)
                else:
                    for plan in plans():
                        run_plans(probe.net, [plan], args.batch_size, probe.device)
        wall, cpu = clocks(run, probe.device)
        counts = count.take()["perturbations"]
        print(f"  {label}: {counts['passes']} passes, {counts['images']} images, occupancy "
              f"{occupancy({'p': counts}, args.batch_size)['p']:.3f}, wall {wall:.1f} s, CPU {cpu:.1f} s")


def ranks(args) -> None:
    sys.path.insert(0, str(ROOT))  # python:tests.tiny_classifier
    probe = dp.load_model("python:tests.tiny_classifier:build", device="cpu")
    from PIL import Image

    root = Path(tempfile.mkdtemp(prefix="bench_ranks_"))
    sources = sorted(EXAMPLES.glob("*.jpg"))
    rows = []
    for k in range(args.images):
        path = root / f"{k:03d}.png"
        Image.open(sources[k % len(sources)]).convert("RGB").resize((96, 96)).rotate(7 * k).save(path)
        own = int(probe.predict(probe.load_image(path)).argmax())
        hard = (k // 2) % 2 == 0  # units of 2 images; even units are attacked, odd ones are wrong already
        rows.append(f"{path},{own if hard else (own + 1) % 10}\n")
    (root / "skewed.csv").write_text("path,label\n" + "".join(rows))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "deepprobe", "robustness", str(root / "skewed.csv"), "--model", "python:tests.tiny_classifier:build",
           "--device", "cpu", "--attack", "apgd-ce", "--eps", "0.001", "--steps", str(args.steps), "--batch-size",
           "1", "--pool", "2", "--workers", "0", "--out", str(root / "run"), "--json"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    summary = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    print(f"ranks: 2 CPU processes (gloo), {args.images} images in units of 2, every other unit attacked "
          f"({args.steps} APGD steps per image)")
    for r in summary["ranks"]:
        print(f"  rank {r['rank']} (on demand): {r['units']} units, busy {r['busy_s']:.1f} s, waited "
              f"{r['waited_s']:.1f} s of {r['wall_s']:.1f} s: idle fraction {r['idle_fraction']:.3f}")
    records = [json.loads(line) for line in (root / "run" / "results.jsonl").read_text().splitlines()]
    load = [0.0, 0.0]
    for record in records:
        load[(record["index"] // 2) % 2] += sum(e["seconds"] for e in record["eps"].values())
    span = max(load)
    print("  fixed shard u % 2 (estimated from the same attack times): idle fractions "
          + ", ".join(f"rank {r} {1 - load[r] / span:.3f}" for r in (0, 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("robustness", "evaluate", "ranks"))
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--pools", default="1,16")
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--module", default="tests.robust_cnn", help="robustness: module with build() and draw()")
    ap.add_argument("--weights", default=None, help="robustness: weights (default: the module's fixture)")
    add_machine_args(ap)
    args = ap.parse_args()
    apply_threads(args)
    args.images = args.images or {"robustness": 256, "evaluate": 8, "ranks": 24}[args.what]
    {"robustness": robustness, "evaluate": evaluate, "ranks": ranks}[args.what](args)


if __name__ == "__main__":
    main()
