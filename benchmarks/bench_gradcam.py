"""Grad-CAM on a batch of photos: deepprobe vs pytorch-grad-cam vs a bare forward + backward pass.

Same model (bundled EfficientNet-Lite0), same layer (bn2, the last spatial map), same targets (each image's
predicted class, given explicitly to both), same batch of 16 photos at 224 (the examples, flipped and cropped
into 16 different images), same device. Timed (medians over repeats, interleaved):

- deepprobe: `explain(probe, x, "gradcam", target=t, layer="bn2")` -> (16,224,224) maps in [0,1] on the device
  (autograd only above the layer; resize and scaling in torch);
- pytorch-grad-cam `GradCAM` -> (16,224,224) numpy maps. The bundle's parameters are frozen, so it needs
  something that requires grad: once with the input requiring grad (backward to the pixels), once with the
  parameters requiring grad (what a freshly built model looks like: backward to every weight);
- bare forward + backward: `net(x)`, then the summed target logits backward to the input (the cost floor of any
  gradient-based method that does not cut the graph), and a bare forward under no_grad.

    python benchmarks/bench_gradcam.py [--batch 16] [--repeats 5] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics

import torch

from _common import add_machine_args, apply_threads, photos, timed  # benchmarks/_common.py

import deepprobe as dp
from deepprobe.explain import explain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layer", default="bn2")
    add_machine_args(ap)
    args = ap.parse_args()
    apply_threads(args)
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    bundle = dp.load_model("efficientnet_lite0", device=args.device)
    device, net, layer = bundle.device, bundle.net, bundle.layer(args.layer)
    x = photos(bundle, args.batch).to(device)
    with torch.no_grad():
        targets = net(x).argmax(1)
    pgc_targets = [ClassifierOutputTarget(int(t)) for t in targets]
    print(f"efficientnet_lite0 on {device}, batch {x.shape[0]} at {tuple(x.shape[-2:])}, layer {args.layer}, "
          f"torch threads {torch.get_num_threads()}, median of {args.repeats}")

    def ours():
        return explain(bundle, x, "gradcam", target=targets, layer=args.layer)

    def reference_input_grad():
        with GradCAM(net, [layer]) as cam:
            return cam(x.detach().clone().requires_grad_(True), pgc_targets)

    def reference_param_grad():
        for p in net.parameters():
            p.requires_grad_(True)
        try:
            with GradCAM(net, [layer]) as cam:
                return cam(x, pgc_targets)
        finally:
            for p in net.parameters():
                p.requires_grad_(False)
            net.zero_grad(set_to_none=True)

    def forward_backward():
        inp = x.detach().requires_grad_(True)
        net(inp).gather(1, targets[:, None]).sum().backward()

    def forward():
        with torch.no_grad():
            net(x)

    # the same maps (checked once, not timed)
    a, b = ours().cpu(), torch.from_numpy(reference_input_grad())
    r = min(float(torch.corrcoef(torch.stack([a[i].flatten(), b[i].flatten()]))[0, 1]) for i in range(len(a)))
    print(f"maps agree with pytorch-grad-cam: lowest per-image correlation {r:.6f}, "
          f"largest difference {float((a - b).abs().max()):.2e}")

    runs = {"deepprobe gradcam": ours, "pytorch-grad-cam (input grad)": reference_input_grad,
            "pytorch-grad-cam (param grads)": reference_param_grad, "forward + backward": forward_backward,
            "forward only": forward}
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn, device))
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    for name, ms in med.items():
        print(f"  {name:32s} {ms:8.0f} ms")
    ours_ms = med["deepprobe gradcam"]
    print(f"ratio pytorch-grad-cam (input grad) / deepprobe: {med['pytorch-grad-cam (input grad)'] / ours_ms:.2f}x")
    print(f"ratio pytorch-grad-cam (param grads) / deepprobe: {med['pytorch-grad-cam (param grads)'] / ours_ms:.2f}x")
    print(f"ratio deepprobe / bare forward + backward: {ours_ms / med['forward + backward']:.2f}x")
    print(f"ratio deepprobe / bare forward: {ours_ms / med['forward only']:.2f}x")


if __name__ == "__main__":
    main()
