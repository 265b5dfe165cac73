"""Explanation metrics: deepprobe's batched metrics next to Quantus 0.6 on the same model, photos, maps and settings.

Pixel-flipping, region perturbation and faithfulness correlation run in both libraries with equal, explicit
settings (features_in_step, patch size, regions, runs, subset size; Quantus gets deepprobe's random subsets so
the correlations can be compared) and their values are checked to agree. Quantus runs as its documentation shows
it: one `metric(model, x_batch, y_batch, a_batch)` call with its default batch_size (every photo at once), or,
with --quantus-per-image, one call per photo (issue #96's setting). Then the whole default metric set of
`deepprobe evaluate` (with the random and edge baselines) is timed per photo.

    python benchmarks/bench_metrics.py [--images 5] [--size 192] [--features-in-step 1152] [--quantus-per-image]
"""
from __future__ import annotations

import argparse
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from _common import EXAMPLES, add_machine_args, apply_threads, timed  # benchmarks/_common.py

import deepprobe as dp
from deepprobe.explain.metrics import faithfulness as fa

warnings.filterwarnings("ignore")


def photos(probe, n: int, size: int) -> torch.Tensor:
    """n photos: the examples, then their mirror images and centre zooms."""
    base = torch.cat([probe.load_image(p) for p in sorted(EXAMPLES.glob("*.jpg"))])
    variants = [base, base.flip(-1), F.interpolate(base[..., 28:-28, 28:-28], size=base.shape[-2:], mode="bilinear",
                                                   align_corners=False)]
    x = torch.cat(variants * (1 + n // (3 * len(base))))[:n]
    return x if size == x.shape[-1] else F.interpolate(x, size=(size, size), mode="area")


def tie_free(maps: torch.Tensor) -> torch.Tensor:
    """A scrambled ramp below the map's resolution so no two pixels tie (NumPy's argsort order of ties is
    unspecified, deepprobe breaks them at random: equal values need tie-free maps)."""
    p = maps[0].numel()
    ramp = torch.randperm(p, generator=torch.Generator().manual_seed(0)).view(maps.shape[1:]).to(maps) / p
    return maps + 1e-3 * ramp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--size", type=int, default=192, help="192: size^2 divisible by 3, see --features-in-step")
    ap.add_argument("--features-in-step", type=int, default=1152,
                    help="must divide size^2 (Quantus asserts it); a multiple of 3 keeps every step to whole pixels, "
                         "else the pixel split at a step boundary loses some channels in NumPy's tie order")
    ap.add_argument("--regions", type=int, default=100)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--infidelity-patch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved runs of each side; the fastest counts "
                                                          "(robust to other work on a shared machine)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="images per forward pass (default: what evaluate uses: 4 on a CPU, 32 on a GPU)")
    ap.add_argument("--quantus-per-image", action="store_true", help="one Quantus call per photo")
    ap.add_argument("--skip-default-set", action="store_true")
    ap.add_argument("--memory", type=int, nargs=2, default=None, metavar=("N1", "N2"),
                    help="peak memory of a data-set run over N1 and N2 photos (deletion, sparseness), batch 8")
    add_machine_args(ap)
    args = ap.parse_args()
    apply_threads(args)
    import quantus

    probe = dp.load_model("efficientnet_lite0", device=args.device)
    dev = probe.device
    if args.batch_size is None:
        from deepprobe.explain.scoring import forward_batch
        from deepprobe.options.evaluate import Options

        args.batch_size = forward_batch(Options(), dev)
    x = photos(probe, args.images, args.size).to(dev)
    with torch.no_grad():
        y = probe.net(x).argmax(1)
    a = tie_free(dp.explain(probe, x, "gradcam", target=y))
    xn, yn, an = x.cpu().numpy(), y.cpu().numpy(), a.cpu().numpy()[:, None]
    per_image = {"normalise_axes": [1, 2, 3]}
    seeds = list(range(len(x)))
    print(f"efficientnet_lite0 on {dev}, {len(x)} photos at {args.size} px, batch {args.batch_size}, torch threads "
          f"{torch.get_num_threads()}, fastest of {args.repeats}; Quantus {quantus.__version__}"
          f"{' one call per photo' if args.quantus_per_image else ' one call for all photos'}")

    def quantus_call(metric, **kw):
        if not args.quantus_per_image:
            return np.asarray(metric(model=probe.net, x_batch=xn, y_batch=yn, a_batch=an, device=str(dev), **kw))
        return np.concatenate([np.asarray(metric(model=probe.net, x_batch=xn[i:i + 1], y_batch=yn[i:i + 1],
                                                 a_batch=an[i:i + 1], device=str(dev), **kw))
                               for i in range(len(xn))])

    subsets = fa.random_subsets(x, seeds, args.runs, 224)
    cases = {
        "pixel-flipping": (
            lambda: fa.pixel_flipping(probe.net, x, a, y, features_in_step=args.features_in_step, seeds=seeds,
                                      batch_size=args.batch_size).curve,
            lambda: quantus_call(quantus.PixelFlipping(features_in_step=args.features_in_step,
                                                       normalise_func_kwargs=per_image, disable_warnings=True)),
            f"features_in_step {args.features_in_step}"),
        "region-perturbation": (
            lambda: fa.region_perturbation(probe.net, x, a, y, patch_size=8, regions_evaluation=args.regions,
                                           seeds=seeds, batch_size=args.batch_size).curve,
            lambda: quantus_call(quantus.RegionPerturbation(patch_size=8, regions_evaluation=args.regions,
                                                            normalise_func_kwargs=per_image, disable_warnings=True)),
            f"patch 8, {args.regions} regions"),
        "faithfulness-correlation": (
            lambda: fa.faithfulness_correlation(probe.net, x, a, y, subsets=subsets,
                                                batch_size=args.batch_size).values,
            lambda: _with_subsets(subsets, lambda: quantus_call(quantus.FaithfulnessCorrelation(
                nr_runs=args.runs, subset_size=224, return_aggregate=False, normalise_func_kwargs=per_image,
                disable_warnings=True)), args.quantus_per_image),
            f"{args.runs} runs of 224 features"),
        "infidelity": (
            lambda: fa.infidelity(probe.net, x, a, y, perturb_patch_sizes=(args.infidelity_patch,),
                                  batch_size=args.batch_size).values,
            lambda: quantus_call(quantus.Infidelity(perturb_patch_sizes=[args.infidelity_patch], disable_warnings=True)),
            f"patch {args.infidelity_patch}; Quantus repeats it 10 times"),
    }
    for name, (ours, theirs, settings) in cases.items():
        result, t_ours, t_theirs = {}, math.inf, math.inf
        for _ in range(args.repeats):
            t_ours = min(t_ours, timed(lambda: result.__setitem__("ours", ours()), dev))
            t_theirs = min(t_theirs, timed(lambda: result.__setitem__("theirs", theirs()), dev))
        theirs_ = np.asarray(result["theirs"], dtype=np.float64)
        diff = float((np.abs(result["ours"].cpu().numpy() - theirs_) / np.maximum(1.0, np.abs(theirs_))).max())
        print(f"  {name:26s} ({settings}): deepprobe {t_ours:7.2f} s   Quantus {t_theirs:7.2f} s   "
              f"largest difference {diff:.1e}{' (relative)' if name == 'infidelity' else ''}")
        print(f"ratio {name} Quantus / deepprobe: {t_theirs / t_ours:.1f}x")

    if args.memory:
        _memory(args.memory)
    if not args.skip_default_set:
        from deepprobe.options.evaluate import DEFAULT_METRICS

        full = photos(probe, args.images, 224).to(dev)  # the model's own size
        t = timed(lambda: dp.evaluate(probe, full, "gradcam", forward_batch=args.batch_size, seed=0), dev)
        print(f"  default metric set ({', '.join(DEFAULT_METRICS)}) for gradcam + random + edge at 224 px: "
              f"{t:7.1f} s, {t / len(x):.1f} s per photo")


def _memory(sizes) -> None:
    """Peak resident memory of `deepprobe evaluate DATA` in a fresh process per data-set size: flat when the
    records go to disk chunk by chunk and only running sums stay in memory."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from PIL import Image

    probe = dp.load_model("efficientnet_lite0", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        x = photos(probe, max(sizes), 224)
        for i, image in enumerate(x):
            Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(folder / f"{i:04d}.png")
        peaks = []
        for n in sizes:
            code = ("import resource, sys; from deepprobe.cli import app; from typer.testing import CliRunner; "
                    f"r = CliRunner().invoke(app, ['evaluate', '{folder}', '--limit', '{n}', '--metric', 'deletion', "
                    f"'--metric', 'sparseness', '--steps', '5', '--batch-size', '8', '--out', '{tmp}/run{n}', '-q', "
                    "'--device', 'cpu']); assert r.exit_code == 0, r.output; "
                    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            peaks.append(int(out.stdout.split()[-1]) / 1024)
            print(f"  data-set run over {n} photos (batch 8): peak memory {peaks[-1]:.0f} MiB")
        print(f"ratio peak memory {sizes[1]} / {sizes[0]} photos: {peaks[1] / peaks[0]:.2f}x")


def _with_subsets(subsets: torch.Tensor, call, per_image: bool):
    """Quantus draws subsets with np.random.choice (run by run, image by image): hand it deepprobe's."""
    n, runs = subsets.shape[:2]
    order = [subsets[i, r].cpu().numpy() for i in range(n) for r in range(runs)] if per_image else \
        [subsets[i, r].cpu().numpy() for r in range(runs) for i in range(n)]
    draws = iter(order)
    choice = np.random.choice
    np.random.choice = lambda *a, **k: next(draws)
    try:
        return call()
    finally:
        np.random.choice = choice


if __name__ == "__main__":
    main()
