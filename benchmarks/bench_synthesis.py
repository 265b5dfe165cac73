"""Style transfer and Deep Dream: deepprobe next to a minimal plain-PyTorch loop doing the same optimization.

Same model (the bundled EfficientNet-Lite0, ReLU6 smoothed for style as deepprobe does), same photos, sizes,
layers, losses, optimizer settings and steps. The plain loops are what one would write by hand: forward hooks
on the layers, a truncated forward (nothing past the deepest layer needed), the loss, torch.optim; no engine,
no best-so-far tracking, no progress callbacks. Ratios are deepprobe's time over the plain loop's (1.00x = no
overhead; lower is better). Runs are interleaved and medians are printed.

    python benchmarks/bench_synthesis.py [--repeats 3] [--device cpu] [--threads 0]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from _common import EXAMPLES, add_machine_args, apply_threads  # benchmarks/_common.py

import deepprobe as dp
from deepprobe.io import read_image
from deepprobe.options.style import CONTENT_LAYER, STYLE_LAYERS
from deepprobe.techniques import dream as D
from deepprobe.techniques import style as S


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


class _Done(Exception):
    """Raised once the deepest needed layer has run."""


def truncated(bundle, layers):
    """A plain callable: images -> {layer: activation}, running the net only as far as the deepest layer;
    and the hook handles (remove them when done)."""
    modules = {name: bundle.layer(name) for name in layers}
    seen: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(_m, _i, out):
            seen[name] = out
            if len(seen) == len(modules):
                raise _Done
        return fn
    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]

    def run(x):
        seen.clear()
        try:
            bundle.net(x)
        except _Done:
            pass
        return dict(seen)
    return run, handles


# ----- style: plain loop ----------------------------------------------------------------------------------
def plain_style(bundle, content, style, steps, optimizer, style_weight=10.0, content_weight=1.0, tv=1.0):
    """Gatys with the same losses as deepprobe.style: energy-normalized Grams, relative content error, TV,
    a 16-px mid-grey frame, pixels seen through clamp(0,1); returns (image, closure calls)."""
    layers = list(dict.fromkeys([*STYLE_LAYERS, CONTENT_LAYER]))
    feats, handles = truncated(bundle, layers)
    frame = lambda x: F.pad(x, (16,) * 4, value=0.5)  # noqa: E731
    gram = lambda f: (lambda m: m @ m.transpose(1, 2) / m.shape[1] / m.shape[2])(f.flatten(2))  # noqa: E731
    with torch.no_grad():
        fs, fc = feats(frame(style)), feats(frame(content))
        targets = {k: gram(fs[k]) for k in STYLE_LAYERS}
        energy = {k: targets[k].pow(2).mean() for k in STYLE_LAYERS}
        ref = fc[CONTENT_LAYER]
    x = content.clone().requires_grad_(True)
    opt = (torch.optim.LBFGS([x], lr=1.0, max_iter=1, max_eval=21, history_size=50, line_search_fn="strong_wolfe")
           if optimizer == "lbfgs" else torch.optim.Adam([x], lr=0.02))
    calls = 0

    def closure():
        nonlocal calls
        calls += 1
        opt.zero_grad()
        img = x.clamp(0, 1) if optimizer == "lbfgs" else x
        f = feats(frame(img))
        loss = content_weight * (f[CONTENT_LAYER] - ref).pow(2).sum() / ref.pow(2).sum()
        for k in STYLE_LAYERS:
            loss = loss + style_weight / len(STYLE_LAYERS) * (gram(f[k]) - targets[k]).pow(2).mean() / energy[k]
        dx, dy = img[:, :, :-1, 1:] - img[:, :, :-1, :-1], img[:, :, 1:, :-1] - img[:, :, :-1, :-1]
        loss = loss + tv * (dx.pow(2) + dy.pow(2) + 1e-8).mean()
        loss.backward()
        return loss
    for _ in range(steps):
        if optimizer == "lbfgs":
            opt.step(closure)
        else:
            closure()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
    for handle in handles:
        handle.remove()
    return x.detach().clamp(0, 1), calls


# ----- dream: plain loop ----------------------------------------------------------------------------------
def plain_dream(bundle, photo, layer, octaves, scale, steps, lr, jitter, sigma, seed):
    """Octaves small to large, random roll, gradient of the layer's mean squared activation, Gaussian blur,
    step divided by the mean gradient magnitude, clamp; the detail carried up between octaves."""
    from torchvision.transforms.functional import gaussian_blur

    feats, handles = truncated(bundle, [layer])
    gen = torch.Generator().manual_seed(seed)
    h, w = photo.shape[-2:]
    sizes = [(round(h / scale ** i), round(w / scale ** i)) for i in reversed(range(octaves))]
    resize = lambda x, s: F.interpolate(x, size=s, mode="bicubic", align_corners=False, antialias=True)  # noqa: E731
    k = 2 * max(1, round(3 * sigma)) + 1
    detail = torch.zeros_like(resize(photo, sizes[0]))
    for size in sizes:
        scaled = resize(photo, size)
        img = (scaled + resize(detail, size)).clamp(0, 1)
        for _ in range(steps):
            dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
            rolled = torch.roll(img, (dy, dx), (2, 3)).requires_grad_(True)
            feats(rolled)[layer].pow(2).mean().backward()
            g = gaussian_blur(torch.roll(rolled.grad, (-dy, -dx), (2, 3)), [k, k], [sigma, sigma])
            with torch.no_grad():
                img = (img + lr * g / g.abs().mean().clamp_min(1e-12)).clamp(0, 1)
        detail = img - scaled
    for handle in handles:
        handle.remove()
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    add_machine_args(ap)
    ap.add_argument("--style-steps", type=int, default=30)
    args = ap.parse_args()
    apply_threads(args)

    ours = dp.load_model("efficientnet_lite0", device=args.device)
    device = ours.device
    plain = S.smoothed(dp.load_model("efficientnet_lite0", device=args.device))  # the same smooth net, own hooks
    plain_dream_net = dp.load_model("efficientnet_lite0", device=args.device)
    print(f"model {ours.spec} on {device}, torch threads {torch.get_num_threads()}, median of {args.repeats}")

    content = S.fit_size(read_image(EXAMPLES / "cat.jpg").to(device), 256)
    style_img = S.fit_size(read_image(EXAMPLES / "styles" / "swirls.jpg").to(device), 256)
    steps = args.style_steps
    for optimizer in ("lbfgs", "adam"):
        t_ours, t_plain, n_ours, n_plain, l_ours, l_plain = [], [], [], [], [], []
        for _ in range(args.repeats):
            res, dt = timed(lambda: dp.style(ours, content, style_img, size=None, steps=steps, optimizer=optimizer),
                            device)
            t_ours.append(dt)
            n_ours.append(len(res.losses))
            l_ours.append(res.losses[-1])
            (img, calls), dt = timed(lambda: plain_style(plain, content, style_img, steps, optimizer), device)
            t_plain.append(dt)
            n_plain.append(calls)
        a, b = statistics.median(t_ours), statistics.median(t_plain)
        na, nb = statistics.median(n_ours), statistics.median(n_plain)
        print(f"\nstyle transfer, cat.jpg + swirls.jpg at {tuple(content.shape[-2:])}, {optimizer}, {steps} steps")
        print(f"  deepprobe.style  {a:6.2f} s  ({na:.0f} loss evaluations, {a / na * 1e3:.0f} ms each)")
        print(f"  plain loop       {b:6.2f} s  ({nb:.0f} loss evaluations, {b / nb * 1e3:.0f} ms each)")
        print(f"  same result: mean |deepprobe - plain| = {float((res.images - img).abs().mean()):.1e} (pixels in [0,1])")
        print(f"  ratio deepprobe/plain {a / b:.2f}x (per evaluation {(a / na) / (b / nb):.2f}x)")

    photo = read_image(EXAMPLES / "cat.jpg").to(device)
    o = D.Options()
    t_ours, t_plain = [], []
    for r in range(args.repeats):
        res, dt = timed(lambda: dp.dream(ours, photo, o.layer, seed=r), device)
        t_ours.append(dt)
        img, dt = timed(lambda: plain_dream(plain_dream_net, photo, o.layer[0], o.octaves, o.octave_scale, o.steps,
                                          o.lr, o.jitter, o.smooth, r), device)
        t_plain.append(dt)
    a, b = statistics.median(t_ours), statistics.median(t_plain)
    total = o.octaves * o.steps
    print(f"\ndeep dream, cat.jpg at {tuple(photo.shape[-2:])}, {o.layer[0]}, {o.octaves} octaves x {o.steps} steps")
    print(f"  deepprobe.dream  {a:6.2f} s  ({a / total * 1e3:.0f} ms per step)")
    print(f"  plain loop       {b:6.2f} s  ({b / total * 1e3:.0f} ms per step)")
    n0 = D.activation_norms(ours, photo, o.layer)[o.layer[0]]
    grow = [float(D.activation_norms(ours, im, o.layer)[o.layer[0]] / n0) for im in (res.images, img)]
    one = dp.dream(ours, photo, o.layer, octaves=1, steps=1, seed=0).images
    first = float((one - plain_dream(plain_dream_net, photo, o.layer[0], 1, 1.4, 1, o.lr, o.jitter, o.smooth, 0))
                  .abs().mean())
    print(f"  same optimization: first step mean |deepprobe - plain| = {first:.1e}; layer norm grows "
          f"x{grow[0]:.2f} (deepprobe) vs x{grow[1]:.2f} (plain); the pixels then part ways, as float rounding does "
          "in any two runs of a dream that differ in the last bit")
    print(f"  ratio deepprobe/plain {a / b:.2f}x")


if __name__ == "__main__":
    main()
