"""PGD side by side: deepprobe.attack vs torchattacks.PGD on the bundled model and the example photos.

Same model (bundle.net takes [0,1] images, normalization inside, as torchattacks expects), same images,
eps, alpha and steps. Success is counted on 8-bit images (what a saved PNG holds) for both; torchattacks'
float success is printed too. Time per step: deepprobe's engine loop without early stopping vs torchattacks'
loop, both over the full number of steps; end to end: deepprobe.attack (stops once every image is fooled)
vs torchattacks.

    pip install '.[bench]' && pip install --no-deps torchattacks
    python benchmarks/bench_pgd.py [--repeats 3] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import EXAMPLES, add_machine_args, apply_threads  # benchmarks/_common.py

import deepprobe as dp
from deepprobe import engine as E
from deepprobe.io import quantize


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def fooled(bundle, images, target, labels):
    pred = bundle.predict(images).argmax(1)
    return (pred == target) if target is not None else (pred != labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    add_machine_args(ap)
    args = ap.parse_args()
    apply_threads(args)

    bundle = dp.load_model("efficientnet_lite0", device=args.device)
    device = bundle.device
    paths = sorted(EXAMPLES.glob("*.jpg"))
    x = quantize(torch.cat([bundle.load_image(p) for p in paths]))
    labels = bundle.predict(x).argmax(1)
    n = x.shape[0]
    print(f"model {bundle.spec} on {device}, {n} images {tuple(x.shape[-2:])}, torch threads {torch.get_num_threads()}")

    settings = [  # (name, target class or None, eps, alpha, steps)
        ("targeted ostrich, eps 4/255, alpha 1/255, 10 steps", "ostrich", 4 / 255, 1 / 255, 10),
        ("untargeted, eps 2/255, alpha 0.5/255, 10 steps", None, 2 / 255, 0.5 / 255, 10),
        ("targeted ostrich, eps 1/255, alpha 0.25/255, 10 steps (hard)", "ostrich", 1 / 255, 0.25 / 255, 10),
    ]
    for setting in settings:
        compare(bundle, x, labels, *setting, repeats=args.repeats)


def compare(bundle, x, labels, name, target_name, eps, alpha, steps, repeats) -> None:
    """One setting: success rates, time per step and end-to-end time, ours next to torchattacks."""
    import torchattacks

    device, n = bundle.device, x.shape[0]
    target = torch.full((n,), bundle.class_index(target_name), device=device) if target_name else None
    atk = torchattacks.PGD(bundle.net, eps=eps, alpha=alpha, steps=steps, random_start=True)
    if target is not None:
        atk.set_mode_targeted_by_label(quiet=True)
    goal = target if target is not None else labels
    objective = E.cross_entropy(target) if target is not None else -E.cross_entropy(labels)

    def ours_loop(seed):  # the engine's PGD loop over every step (no early stop): time per step
        param = E.Perturbation(x, eps, "linf", generator=torch.Generator().manual_seed(seed))
        return E.optimize(bundle, param, objective, steps=steps, lr=alpha, optimizer="sign", check_every=steps)

    def ours_attack(seed, rounds=None):  # what users run: early stop per image, success on the 8-bit image
        extra = {} if rounds is None else {"rounds": rounds}
        # confidence=0: done once the target is on top, the goal torchattacks' success counts (the default
        # 0.9 goes on to a confident target and would compare different work)
        return dp.attack(bundle, x, target, labels=None if target is not None else labels, eps=eps, alpha=alpha,
                         steps=steps, seed=seed, confidence=0, **extra)

    t_ours, t_theirs, t_e2e, ok_ours, ok_theirs_q, ok_theirs_f, steps_e2e = [], [], [], [], [], [], []
    ok_same_budget = []
    for r in range(repeats):  # interleaved, so load from other processes hits both sides alike
        torch.manual_seed(r)
        adv_t, dt = timed(lambda: atk(x, goal), device)
        t_theirs.append(dt / steps)
        ok_theirs_f.append(fooled(bundle, adv_t, target, labels).float().mean().item())
        ok_theirs_q.append(fooled(bundle, quantize(adv_t), target, labels).float().mean().item())
        _, dt = timed(lambda seed=r: ours_loop(seed), device)
        t_ours.append(dt / steps)
        res, dt = timed(lambda seed=r: ours_attack(seed), device)
        t_e2e.append(dt)
        steps_e2e.append(res.steps.float().mean().item())
        ok_ours.append(res.success.float().mean().item())
        # Without the extra rounds for images the 8-bit rounding loses: at most `steps` steps, like torchattacks.
        ok_same_budget.append(ours_attack(r, rounds=0).success.float().mean().item())
    per_ours, per_theirs = statistics.median(t_ours), statistics.median(t_theirs)
    print(f"\n{name}")
    print(f"  success (8-bit):  deepprobe {statistics.mean(ok_ours):.0%} (with rounds=0, at most {steps} steps: "
          f"{statistics.mean(ok_same_budget):.0%})   torchattacks {statistics.mean(ok_theirs_q):.0%} "
          f"(float {statistics.mean(ok_theirs_f):.0%})")
    print(f"  time per step:    deepprobe {per_ours * 1e3:.0f} ms   torchattacks {per_theirs * 1e3:.0f} ms   "
          f"ratio torchattacks/deepprobe {per_theirs / per_ours:.2f}x")
    print(f"  end to end:       deepprobe.attack {statistics.median(t_e2e):.2f} s (mean steps per image "
          f"{statistics.mean(steps_e2e):.1f}, early stop)   torchattacks {per_theirs * steps:.2f} s   "
          f"ratio {per_theirs * steps / statistics.median(t_e2e):.2f}x")

if __name__ == "__main__":
    main()
