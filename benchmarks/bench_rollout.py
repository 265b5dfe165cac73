"""Transformer explainers' cost: rollout next to one forward pass, Chefer next to one forward + backward pass.

Same model (timm vit_small_patch16_224, random weights: no download and no ViT weights offline; cost does not
depend on the weights), same batch of example photos, same device. The references are the plain passes a user
would run anyway: `bundle.net(x)` under no_grad (timm's fused attention) for rollout, and the forward pass plus
the backward pass of the summed target logits to the input for Chefer. deepprobe's rollout needs one forward
pass on the unfused attention path (the maps must exist) plus L small (T x T) matrix products; Chefer one
forward + backward on that path. `explain()` adds the dispatcher's work (predicted classes, resize to the input,
scaling). Medians over repeats, interleaved.

    python benchmarks/bench_rollout.py [--batch 8] [--repeats 5] [--device cpu]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics

import torch

from _common import EXAMPLES, timed, add_machine_args, apply_threads  # benchmarks/_common.py

import deepprobe as dp
from deepprobe.explain import explain
from deepprobe.explain.transformer import chefer, rollout


@contextlib.contextmanager
def unfused(bundle):
    """timm's manual attention path, which rollout has to take (to split its cost from the rollout math)."""
    modules = [m for m in bundle.inner.modules() if hasattr(m, "fused_attn")]
    saved = [m.fused_attn for m in modules]
    for m in modules:
        m.fused_attn = False
    try:
        yield
    finally:
        for m, v in zip(modules, saved):
            m.fused_attn = v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="timm:vit_small_patch16_224")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    add_machine_args(ap)
    args = ap.parse_args()
    apply_threads(args)

    bundle = dp.load_model(args.model, device=args.device)
    device = bundle.device
    photos = [bundle.load_image(p) for p in sorted(EXAMPLES.glob("*.jpg"))]
    x = torch.cat([photos[i % len(photos)] for i in range(args.batch)])
    with torch.no_grad():
        targets = bundle.net(x).argmax(1)
    print(f"model {bundle.spec} (random weights) on {device}, batch {x.shape[0]} at {tuple(x.shape[-2:])}, "
          f"torch threads {torch.get_num_threads()}, median of {args.repeats}")

    def forward():
        with torch.no_grad():
            bundle.net(x)

    def forward_backward():
        inp = x.detach().requires_grad_(True)
        bundle.net(inp).gather(1, targets[:, None]).sum().backward()

    def forward_unfused():
        with torch.no_grad(), unfused(bundle):
            bundle.net(x)

    cases = {
        "forward (fused attention)": forward,
        "forward (unfused attention)": forward_unfused,
        "rollout (raw maps)": lambda: rollout(bundle, x, targets),
        "explain(rollout)": lambda: explain(bundle, x, "rollout"),
        "forward + backward": forward_backward,
        "chefer (raw maps)": lambda: chefer(bundle, x, targets),
        "explain(chefer)": lambda: explain(bundle, x, "chefer", target=targets),
    }
    for fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            times[name].append(timed(fn, device))
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, t in med.items():
        print(f"  {name:28s} {t * 1000:8.1f} ms")
    fwd, fb = med["forward (fused attention)"], med["forward + backward"]
    print(f"ratio rollout / forward            {med['rollout (raw maps)'] / fwd:5.2f}x")
    print(f"ratio explain(rollout) / forward   {med['explain(rollout)'] / fwd:5.2f}x")
    print(f"ratio chefer / (forward+backward)  {med['chefer (raw maps)'] / fb:5.2f}x")
    print(f"ratio explain(chefer) / (fwd+bwd)  {med['explain(chefer)'] / fb:5.2f}x")


if __name__ == "__main__":
    main()
