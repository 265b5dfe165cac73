"""`dp.evaluate` cost: what a photo costs, and how close it is to the forward passes it cannot avoid.

Deletion/insertion curves of M maps over S steps need M x 2 x (S+1) forward passes per photo; deepprobe builds
the perturbed images chunk by chunk on the device from pixel ranks. The reference is a bare loop of exactly that
many forward passes (same batch size, images prepared in advance, no masking): the ratio is deepprobe's overhead.
The sanity check needs one map per randomized layer group; its reference is that many Grad-CAM calls on the
unchanged model (the ratio is the cost of copying and re-initializing the network).

    python benchmarks/bench_evaluate.py [--steps 20] [--batch-size 32] [--device cpu]
"""
from __future__ import annotations

import argparse

import torch

from _common import EXAMPLES, timed, add_machine_args, apply_threads  # benchmarks/_common.py

import deepprobe as dp
from deepprobe.explain import explain
from deepprobe.explain.evaluate import BASELINES
from deepprobe.explain.sanity import randomization_groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    add_machine_args(ap)
    args = ap.parse_args()
    apply_threads(args)
    probe = dp.load_model("efficientnet_lite0", device=args.device)
    x = torch.cat([probe.load_image(p) for p in sorted(EXAMPLES.glob("*.jpg"))])
    n, dev = x.shape[0], probe.device
    t = probe.net(x).argmax(1)
    images = (1 + len(BASELINES)) * 2 * (args.steps + 1) * n
    bank = x.repeat((args.batch_size + n - 1) // n, 1, 1, 1)[: args.batch_size]

    def bare_forwards():
        with torch.no_grad():
            for start in range(0, images, args.batch_size):
                probe.net(bank[: min(args.batch_size, images - start)])

    groups = len(randomization_groups(probe.inner))
    print(f"efficientnet_lite0 on {dev}, {n} photos at {tuple(x.shape[-2:])}, {args.steps} steps, batch "
          f"{args.batch_size}, torch threads {torch.get_num_threads()}; {images} perturbed images, {groups} groups")
    curves = timed(lambda: dp.evaluate(probe, x, "gradcam", target=t, metrics=["deletion", "insertion"],
                                       steps=args.steps, batch_size=args.batch_size), dev)
    bare = timed(bare_forwards, dev)
    sanity = timed(lambda: dp.evaluate(probe, x, "gradcam", target=t, metrics="sanity", baselines=False), dev)
    cams = timed(lambda: [explain(probe, x, "gradcam", target=t) for _ in range(groups + 2)], dev)
    print(f"  evaluate curves (gradcam + random + edge)   {curves * 1000:8.0f} ms  ({curves / n:.2f} s per photo)")
    print(f"  bare forwards of the same {images} images    {bare * 1000:8.0f} ms")
    print(f"  evaluate sanity (gradcam, {groups} groups)      {sanity * 1000:8.0f} ms  ({sanity / n:.2f} s per photo)")
    print(f"  {groups + 2} Grad-CAM calls, unchanged model       {cams * 1000:8.0f} ms")
    print(f"ratio evaluate curves / bare forwards: {curves / bare:.2f}x")
    print(f"ratio evaluate sanity / Grad-CAM calls: {sanity / cams:.2f}x")


if __name__ == "__main__":
    main()
