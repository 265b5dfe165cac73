"""Robustness attacks side by side: deepprobe's APGD-CE, APGD-T, FAB-T, Square and the AutoAttack cascade vs
torchattacks' APGD, APGDT, FAB (multi-targeted) and Square, with the same settings.

Same model (bundled EfficientNet-Lite0; its parameters are frozen, torchattacks differentiates the input),
same images (the example photos, mirrored and zoomed into --images different 224 px images, rounded to 8 bits;
labels = the model's clean predictions, so clean accuracy is 100%), same eps, norm, iterations, restarts (1),
target classes and queries, set explicitly on both sides (torchattacks' own AutoAttack would build them with
10 iterations). Square runs AutoAttack's schedule on both sides (p_init 0.8, not rescaled to the budget).

Robust accuracy: deepprobe counts an image as broken only when its 8-bit example is misclassified by a fresh
forward pass; torchattacks' float outputs are counted as they are and the way deepprobe counts its own (rounded
into the ball on the 8-bit grid, fresh forward pass), the like-for-like figure. Time: wall
clock and CPU time of each call, medians of --repeats interleaved runs (deepprobe drops an image from the
batch once it is broken; torchattacks' APGD/APGDT/FAB iterate every image to the end). On a shared machine run
with --threads 1 and read the CPU-time ratio: other processes' load stretches wall time, not CPU time. The cascade runs each attack on the images still robust, on both sides.

With `--model robust-cnn` the model is the adversarially trained 32x32 CNN of tests/robust_cnn.py (the
fixture tests/fixtures/robust_cnn.pt) on --images synthetic scenes drawn by its generator, with their true labels:
only the images it classifies correctly are attacked, most of them survive, and every attack of the cascade runs
to its end, which is where AutoAttack spends its time. The cascade rows then also print each stage's time.

    pip install '.[bench]' && pip install --no-deps torchattacks
    python benchmarks/bench_robustness.py [--images 10] [--eps 1/255] [--norm linf] [--steps 10] [--targets 3]
                                          [--queries 100] [--attacks apgd-ce,apgd-t,fab-t,square,autoattack]
    python benchmarks/bench_robustness.py --model robust-cnn --images 120 --eps 8/255 --steps 100 --targets 9 \
                                          --queries 5000 --attacks autoattack --repeats 1 --threads 1
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from _common import add_machine_args, apply_threads, clocks, photos  # benchmarks/_common.py

import deepprobe as dp
from deepprobe.io import quantize
from deepprobe.options import parse_number
from deepprobe.techniques.attacks import (AttackSettings, Checker, apgd, apgd_targeted, fab_targeted, robust_batch,
                                          square)

ALL = ("apgd-ce", "apgd-t", "fab-t", "square", "autoattack")
STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0", choices=("efficientnet_lite0", "robust-cnn"),
                    help="robust-cnn: the adversarially trained 32x32 CNN of the tests on its synthetic scenes")
    ap.add_argument("--seed", type=int, default=1, help="robust-cnn: the seed its scenes are drawn with")
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--eps", default="1/255", help="budget, e.g. 1/255 (linf) or 0.25 (l2)")
    ap.add_argument("--norm", default="linf", choices=("linf", "l2"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--targets", type=int, default=3)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--attacks", default=",".join(ALL))
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of each side; medians are reported")
    ap.add_argument("--memory", action="store_true",
                    help="also peak memory of each side: peak RSS of a fresh process per attack and side, less that of "
                         "one that only loads the model and images (CPU); torch's peak allocation (CUDA)")
    ap.add_argument("--only", help=argparse.SUPPRESS)  # internal: run one side of one attack once, print peak RSS
    ap.add_argument("--side", help=argparse.SUPPRESS)
    add_machine_args(ap)
    args = ap.parse_args()
    apply_threads(args)
    import torchattacks

    eps = parse_number(args.eps, float, "eps", "--eps")
    bundle, x, y, clean = _model_and_images(args)
    device, net = bundle.device, bundle.net
    n = x.shape[0]
    seeds = list(range(n))
    settings = AttackSettings(norm=args.norm, steps=args.steps, restarts=1, targets=args.targets, queries=args.queries)
    ta_norm = "Linf" if args.norm == "linf" else "L2"
    print(f"{args.model} on {device}, {n} images at {tuple(x.shape[-2:])}{clean}, torch threads "
          f"{torch.get_num_threads()}; {args.norm} eps {args.eps}, {args.steps} iterations, 1 restart, "
          f"{args.targets} target classes, {args.queries} queries")

    def ta_apgd():
        return torchattacks.APGD(net, norm=ta_norm, eps=eps, steps=args.steps, n_restarts=1, loss="ce", seed=0)

    def ta_apgdt():
        return torchattacks.APGDT(net, norm=ta_norm, eps=eps, steps=args.steps, n_restarts=1, n_classes=args.targets + 1,
                                  seed=0)

    def ta_fab():
        return torchattacks.FAB(net, norm=ta_norm, eps=eps, steps=args.steps, n_restarts=1, multi_targeted=True,
                                n_classes=args.targets + 1, seed=0)

    def ta_square():
        return torchattacks.Square(net, norm=ta_norm, eps=eps, n_queries=args.queries, n_restarts=1, p_init=0.8,
                                   loss="margin", resc_schedule=False, seed=0)

    pairs = {
        "apgd-ce": (lambda: apgd(bundle, x, y, eps, norm=args.norm, steps=args.steps, seeds=seeds), ta_apgd),
        "apgd-t": (lambda: apgd_targeted(bundle, x, y, eps, norm=args.norm, steps=args.steps, targets=args.targets,
                                         seeds=seeds), ta_apgdt),
        "fab-t": (lambda: fab_targeted(bundle, x, y, eps, norm=args.norm, steps=args.steps, targets=args.targets,
                                       seeds=seeds), ta_fab),
        "square": (lambda: square(bundle, x, y, eps, norm=args.norm, queries=args.queries, seeds=seeds), ta_square),
    }
    makers = [ta_apgd, ta_apgdt, ta_fab, ta_square]
    if args.only is not None:  # a child of --memory
        if args.only != "none":
            _run_side(args.only, args.side, pairs, bundle, x, y, eps, settings, seeds, makers, args.norm)
        print(f"peak_rss_mb {_peak_rss_mb():.1f}")
        return
    for name in [a.strip() for a in args.attacks.split(",") if a.strip()]:
        ours_times, ref_times, stage_rows = [], [], []
        for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits both sides
            if name == "autoattack":
                ours_robust, t_ours, ours_stages = _ours_cascade(bundle, x, y, eps, settings, seeds)
                (ta_float, ta_8bit), t_ref, ref_stages = _reference_cascade(bundle, x, y, eps, args.norm, makers)
                stage_rows.append((ours_stages, ref_stages))
            else:
                ours_fn, ref_fn = pairs[name]
                holder = {}
                t_ours = clocks(lambda: holder.__setitem__("res", ours_fn()), device)
                ours_robust = 1 - holder["res"].success.float().mean().item()
                torch.manual_seed(0)
                t_ref = clocks(lambda: holder.__setitem__("adv", ref_fn()(x, y)), device)
                ta_float, ta_8bit = _robust(bundle, x, holder["adv"], y, eps, args.norm)
            ours_times.append(t_ours)
            ref_times.append(t_ref)
        memory = _memory(name, pairs, bundle, x, y, eps, settings, seeds, makers, args) if args.memory else ""
        wall_ours, cpu_ours = (statistics.median(t[k] for t in ours_times) for k in (0, 1))
        wall_ref, cpu_ref = (statistics.median(t[k] for t in ref_times) for k in (0, 1))
        print(f"\n{name}")
        print(f"  robust accuracy:  deepprobe {ours_robust:.0%} (8-bit, re-checked)   torchattacks {ta_float:.0%} "
              f"(float), {ta_8bit:.0%} (8-bit, checked as ours)")
        print(f"  time (median of {args.repeats}): deepprobe {wall_ours:.1f} s wall, {cpu_ours:.1f} s CPU   "
              f"torchattacks {wall_ref:.1f} s wall, {cpu_ref:.1f} s CPU")
        print(f"  ratio time deepprobe/torchattacks ({name}): {wall_ours / wall_ref:.2f}x wall, "
              f"{cpu_ours / cpu_ref:.2f}x CPU   robust accuracy deepprobe - torchattacks: "
              f"{100 * (ours_robust - ta_8bit):+.0f} points (8-bit), {100 * (ours_robust - ta_float):+.0f} (vs float)")
        if stage_rows:
            _print_stages(stage_rows, n)
        if memory:
            print(memory)


def _model_and_images(args):
    """(bundle, images on the 8-bit grid, labels, a note on clean accuracy) for --model."""
    if args.model == "robust-cnn":
        sys.path.insert(0, str(ROOT))
        from tests import robust_cnn

        bundle = dp.load_model("python:tests.robust_cnn:build", weights=robust_cnn.FIXTURE, device=args.device)
        x, y = robust_cnn.draw(args.images, seed=args.seed)
        x, y = x.to(bundle.device), y.to(bundle.device)
        with torch.no_grad():
            correct = int((bundle.net(x).argmax(1) == y).sum())
        return bundle, x, y, f", true labels, clean accuracy {correct}/{len(y)} (only those are attacked)"
    bundle = dp.load_model("efficientnet_lite0", device=args.device)
    x = quantize(photos(bundle, args.images).to(bundle.device))
    with torch.no_grad():
        y = bundle.net(x).argmax(1)
    return bundle, x, y, ", labels = clean predictions"


def _print_stages(rows, n: int) -> None:
    """Per-stage wall seconds and images still robust after each stage (medians over the repeats)."""
    print("  per stage (median wall s; robust images after the stage):")
    for k, stage in enumerate(STAGES):
        ours = statistics.median(r[0][k][0] for r in rows) if all(len(r[0]) > k for r in rows) else None
        ref = statistics.median(r[1][k][0] for r in rows) if all(len(r[1]) > k for r in rows) else None
        left_ours = rows[-1][0][k][1] if len(rows[-1][0]) > k else "-"
        left_ref = rows[-1][1][k][1] if len(rows[-1][1]) > k else "-"
        ratio = f"{ours / ref:.2f}x" if ours is not None and ref else "-"
        print(f"    {stage:8s} deepprobe {_s(ours)} ({left_ours}/{n})   torchattacks {_s(ref)} ({left_ref}/{n})   "
              f"ratio {ratio}")


def _s(value) -> str:
    return f"{value:7.1f} s" if value is not None else "      - "


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a
    child started by a big parent would report the parent's peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_side(name, side, pairs, bundle, x, y, eps, settings, seeds, makers, norm) -> None:
    if name == "autoattack":
        if side == "ours":
            robust_batch(bundle, x, y, [eps], cascade=["autoattack"], settings=settings, seeds=seeds)
        else:
            _reference_cascade(bundle, x, y, eps, norm, makers)
    elif side == "ours":
        pairs[name][0]()
    else:
        pairs[name][1]()(x, y)


def _memory(name, pairs, bundle, x, y, eps, settings, seeds, makers, args) -> str:
    """Peak memory of each side beyond the model and the images, as a line to print."""
    if bundle.device.type == "cuda":
        peaks = {}
        for side in ("ours", "ref"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            _run_side(name, side, pairs, bundle, x, y, eps, settings, seeds, makers, args.norm)
            peaks[side] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    else:
        forwarded = [a for a in sys.argv[1:] if a != "--memory"]

        def child(only: str, side: str = "ours") -> float:
            out = subprocess.run([sys.executable, __file__, *forwarded, "--only", only, "--side", side],
                                 capture_output=True, text=True, check=True).stdout
            return float(out.rsplit("peak_rss_mb", 1)[1])
        base = child("none")
        peaks = {side: child(name, side) - base for side in ("ours", "ref")}
    ratio = f"{peaks['ours'] / peaks['ref']:.2f}x" if peaks["ref"] > 1 else "n/a (too small to tell)"
    return (f"  peak memory beyond model and images: deepprobe {peaks['ours']:.0f} MiB   torchattacks "
            f"{peaks['ref']:.0f} MiB   ratio deepprobe/torchattacks {ratio}")


@torch.no_grad()
def _robust(bundle, x, adv, y, eps, norm) -> tuple[float, float]:
    """Robust accuracy of torchattacks' output: as it is (float), and counted as deepprobe counts its own
    (rounded to 8 bits inside the ball, misclassified by a fresh forward pass)."""
    fl = (bundle.net(adv).argmax(1) == y).float().mean().item()
    checker = Checker(bundle, x, y, eps, norm)
    checker(torch.arange(x.shape[0], device=x.device), adv)
    return fl, 1 - checker.success.float().mean().item()


def _ours_cascade(bundle, x, y, eps, settings, seeds):
    """Robust share, (wall, CPU) and per stage (wall seconds, images still robust) of robust_batch."""
    holder, stages, mark = {}, [], [0.0]

    def stage_done(state) -> None:  # StageProgress: `finished` once at the end of each stage
        if state.finished:
            if bundle.device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            stages.append((now - mark[0], state.robust))
            mark[0] = now

    def run():
        mark[0] = time.perf_counter()
        holder["out"] = robust_batch(bundle, x, y, [eps], cascade=["autoattack"], settings=settings, seeds=seeds,
                                     callback=stage_done)
    t = clocks(run, bundle.device)
    robust = holder["out"].stage_robust[eps]["square"]
    return robust.float().mean().item(), t, stages


def _reference_cascade(bundle, x, y, eps, norm, makers):
    """AutoAttack's loop with torchattacks' attacks: each one on the images still robust (float decision), after
    a clean pass (misclassified images are not attacked). Also per stage (wall seconds, images still robust)."""
    adv = x.clone()
    stages = []

    def run():
        with torch.no_grad():
            robust = bundle.net(x).argmax(1) == y
        for make in makers:
            start = time.perf_counter()
            idx = robust.nonzero().flatten()
            if idx.numel():
                out = make()(x[idx], y[idx])
                with torch.no_grad():
                    fooled = bundle.net(out).argmax(1) != y[idx]
                adv[idx[fooled]] = out[fooled]
                robust[idx[fooled]] = False
            if bundle.device.type == "cuda":
                torch.cuda.synchronize()
            stages.append((time.perf_counter() - start, int(robust.sum())))
    torch.manual_seed(0)
    t = clocks(run, bundle.device)
    return _robust(bundle, x, adv, y, eps, norm), t, stages


if __name__ == "__main__":
    main()
