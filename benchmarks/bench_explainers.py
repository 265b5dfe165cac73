"""The explanation methods added with LRP: each beside its reference library on the same model, photos and targets.

- CNN methods on the bundled EfficientNet-Lite0, the example photos at 224, each photo's predicted class:
  lrp (three composites) vs Zennit's own `Gradient` attributor with the same composite and canonizers;
  xgradcam, layercam, eigencam, fullgrad vs pytorch-grad-cam at `bn2` (FullGrad: pytorch-grad-cam on a copy whose
  BatchNormAct2d layers are plain nn.BatchNorm2d + activation, the layer types it looks for); scorecam and
  ablationcam vs pytorch-grad-cam at `--pass-layer` (default blocks.0.0.bn1, 32 channels: both make one forward
  pass per channel and photo, 1280 at bn2), in batches of 32 passes on both sides.
- ViT methods on a ViT-S/16 (224 px, 12 blocks, width 384, random weights: none are bundled): attnlrp vs LXT's
  own recipe on torchvision's ViT (both on that model), legrad on the timm twin vs torch-cam on the torchvision one.
- Each also against a bare forward + backward pass of the same batch (the floor of a gradient method).
Times are CPU seconds of this process (steadier than wall time on a shared machine; use --threads 1) or wall
seconds on a GPU; the median of --repeats, interleaved.

    python benchmarks/bench_explainers.py [--batch 4] [--repeats 3] [--threads 1] [--only lrp,scorecam,...]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

from _common import add_machine_args, apply_threads, clocks, photos  # benchmarks/_common.py

import deepprobe as dp
from deepprobe.explain import explain

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import tiny_vits  # noqa: E402  (the torchvision ViT, its timm twin, LXT's recipe)


def _median_seconds(fn, device, repeats: int) -> float:
    fn()  # warm-up
    values = []
    for _ in range(repeats):
        wall, cpu = clocks(fn, device)
        values.append(cpu if device.type == "cpu" else wall)
    return statistics.median(values)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return min(float(torch.corrcoef(torch.stack([a[i].flatten().double(), b[i].flatten().double()]))[0, 1])
               for i in range(len(a)))


def _plain_batchnorms(net: nn.Module) -> nn.Module:
    net = copy.deepcopy(net)
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ == "BatchNormAct2d":
                bn = nn.BatchNorm2d(child.num_features, eps=child.eps).eval().to(child.weight.device)
                bn.load_state_dict({k: v for k, v in child.state_dict().items() if k in bn.state_dict()})
                setattr(parent, name, nn.Sequential(bn, child.act))
    return net


def cnn_rows(args, only) -> list[tuple[str, float, str, float, float, str]]:
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from zennit.attribution import Gradient

    from deepprobe.explain.lrp import composite_for, lrp_relevance

    bundle = dp.load_model("efficientnet_lite0", device=args.device)
    device, net = bundle.device, bundle.net
    x = photos(bundle, args.batch).to(device)
    with torch.no_grad():
        targets = net(x).argmax(1)
    pgc_targets = [ClassifierOutputTarget(int(t)) for t in targets]
    xn = (x - net.mean) / net.std

    def floor():
        inp = x.detach().requires_grad_(True)
        net(inp).gather(1, targets[:, None]).sum().backward()

    base = _median_seconds(floor, device, args.repeats)
    rows = []

    def pgc_call(cls, model, layers, inputs, **kw):
        def run():
            with cls(model, layers, **kw) as cam:
                if hasattr(cam, "batch_size"):
                    cam.batch_size = 32
                return torch.from_numpy(cam(inputs.detach().clone().requires_grad_(), pgc_targets))
        return run

    for composite in ("epsilon-plus-flat", "epsilon-gamma-box", "epsilon-alpha2-beta1"):
        if only and "lrp" not in only:
            break
        comp = composite_for(bundle, x, composite)  # the same composite and canonizers for Zennit's attributor

        def zennit_ref(comp=comp):
            with Gradient(model=bundle.inner, composite=comp) as attributor:
                logits = bundle.inner(xn)
                seed = torch.zeros_like(logits).scatter(1, targets[:, None], logits.gather(1, targets[:, None]))
                return attributor(xn, seed)[1]

        ours = lambda composite=composite: lrp_relevance(bundle, x, targets, composite)[0]  # noqa: E731
        agree = _corr(ours().sum(1), zennit_ref().sum(1))
        rows.append((f"lrp {composite}", _median_seconds(ours, device, args.repeats), "Zennit Gradient attributor",
                     _median_seconds(zennit_ref, device, args.repeats), base, f"corr {agree:.4f}"))
    cams = [("xgradcam", "XGradCAM", "bn2"), ("layercam", "LayerCAM", "bn2"), ("eigencam", "EigenCAM", "bn2"),
            ("fullgrad", "FullGrad", None), ("scorecam", "ScoreCAM", args.pass_layer),
            ("ablationcam", "AblationCAM", args.pass_layer)]
    for method, cls, layer in cams:
        if only and method not in only:
            continue
        kwargs = {"layer": layer} if layer else {}
        if method in ("scorecam", "ablationcam"):
            kwargs["internal_batch"] = 32
        ours = lambda method=method, kwargs=kwargs: explain(bundle, x, method, target=targets, **kwargs)  # noqa: E731
        model = _plain_batchnorms(net) if method == "fullgrad" else net
        ref = pgc_call(getattr(pgc, cls), model, [bundle.layer(layer)] if layer else [], x)
        agree = _corr(ours().cpu(), ref())
        rows.append((method, _median_seconds(ours, device, args.repeats), f"pytorch-grad-cam {cls}",
                     _median_seconds(ref, device, args.repeats), base, f"corr {agree:.4f}"))
    return rows


def vit_rows(args, only) -> list[tuple[str, float, str, float, float, str]]:
    from torchcam.methods import LeGrad

    from deepprobe.explain.attnlrp import attnlrp_relevance
    from deepprobe.explain.legrad import legrad

    device = torch.device(args.device)
    tv = tiny_vits.torchvision_vit(size=224, patch=16, dim=384, depth=12, heads=6, mlp=1536, classes=1000)
    twin = tiny_vits.timm_twin(tv)
    ours_tv = tiny_vits.bundle(tv, "torchvision:vit-s", 224, device)  # moves tv to the device, frozen
    ours_timm = tiny_vits.bundle(twin, "timm:vit-s", 224, device)
    bundle = dp.load_model("efficientnet_lite0", device=args.device)
    x = photos(bundle, args.batch).to(device)
    xn = (x - 0.5) / 0.5
    with torch.no_grad():
        targets = tv(xn).argmax(1)

    def floor():
        inp = xn.detach().requires_grad_(True)
        tv(inp).gather(1, targets[:, None]).sum().backward()

    base = _median_seconds(floor, device, args.repeats)
    rows = []
    if not only or "attnlrp" in only:
        ours = lambda: attnlrp_relevance(ours_tv, x, targets)[0]  # noqa: E731
        ref = lambda: tiny_vits.lxt_reference(tv, xn, targets)  # noqa: E731
        agree = float((ours() - ref()).abs().max() / ref().abs().max())
        rows.append(("attnlrp (ViT-S/16)", _median_seconds(ours, device, args.repeats), "LXT 2.1 (its ViT recipe)",
                     _median_seconds(ref, device, args.repeats), base, f"max diff {agree:.1e} of the range"))
    if not only or "legrad" in only:
        ours = lambda: legrad(ours_timm, x, targets)  # noqa: E731

        def ref():
            with LeGrad(tv, list(tv.encoder.layers)[-4:]) as extractor:
                return extractor(targets.tolist(), tv(xn), normalized=False)[0]

        agree = _corr(ours().cpu(), ref().cpu())
        rows.append(("legrad (ViT-S/16)", _median_seconds(ours, device, args.repeats), "torch-cam 0.5 LeGrad",
                     _median_seconds(ref, device, args.repeats), base, f"corr {agree:.4f}"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pass-layer", default="blocks.0.0.bn1")
    ap.add_argument("--only", default="", help="comma-separated methods (default: all)")
    add_machine_args(ap)
    args = ap.parse_args()
    apply_threads(args)
    only = {m for m in args.only.split(",") if m}
    print(f"{args.batch} photos at 224 on {args.device}, torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats} ({'CPU' if args.device == 'cpu' else 'wall'} seconds)")
    rows = cnn_rows(args, only) + vit_rows(args, only)
    print(f"  {'method':28s} {'deepprobe':>10s} {'reference':>10s}  reference library")
    for name, ours, ref_name, ref, base, agree in rows:
        print(f"  {name:28s} {ours:9.2f}s {ref:9.2f}s  {ref_name} ({agree}); forward + backward {base:.2f}s")
    for name, ours, ref_name, ref, base, _ in rows:
        print(f"ratio {ref_name} / deepprobe {name}: {ref / ours:.2f}x; deepprobe / forward + backward: "
              f"{ours / base:.2f}x")


if __name__ == "__main__":
    main()
