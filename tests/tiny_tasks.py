"""A tiny detector and a tiny segmenter, trained in seconds on synthetic shapes (no downloadable weights).

Scenes are 64x64: a textured background with a red square and/or a blue disk. Both models are real torchvision
classes (FasterRCNN with a three-layer backbone; FCN with a three-layer backbone), exposed to deepprobe as
`python:tests.tiny_tasks:detector` / `python:tests.tiny_tasks:segmenter` with `--weights FILE`, so every test
runs the same code path as a user's torchvision detector or segmenter. `docs/task_figures.py` uses them for the
README figures.

The trained weights the tests use are shipped in tests/fixtures/ (float16 state dicts, loaded as float32): training
converges to different models on CPUs with different floating-point kernels (AVX-512 or not), so the tests load
these files instead of training. Remake them with `python -m tests.tiny_tasks` (writes tests/fixtures/).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CLASSES = ["__background__", "square", "disk"]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
DETECTOR_WEIGHTS = FIXTURES / "tiny_detector.pth"
SEGMENTER_WEIGHTS = FIXTURES / "tiny_segmenter.pth"
SIZE = 64
COLORS = {1: (0.85, 0.15, 0.1), 2: (0.1, 0.25, 0.9)}  # square: red, disk: blue


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def detector() -> nn.Module:
    """A FasterRCNN on a 3-layer, stride-8 backbone (torchvision's own detection code, tiny widths)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    backbone = nn.Sequential(_block(3, 16, 2), _block(16, 32, 2), _block(32, 32, 2))
    backbone.out_channels = 32
    net = FasterRCNN(
        backbone, num_classes=None, min_size=SIZE, max_size=SIZE,
        rpn_anchor_generator=AnchorGenerator(sizes=((12, 18, 26),), aspect_ratios=((1.0,),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=4, sampling_ratio=1),
        box_head=TwoMLPHead(32 * 16, 64), box_predictor=FastRCNNPredictor(64, len(CLASSES)),
        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=100,
        rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=64, box_batch_size_per_image=32,
        box_nms_thresh=0.3, box_detections_per_img=10)
    net.labels = CLASSES
    return net


def segmenter() -> nn.Module:
    """torchvision's FCN on a 3-layer, stride-4 backbone; returns {"out": (N,3,H,W)} like torchvision's."""
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.fcn import FCN

    body = nn.Sequential()
    body.add_module("stem", _block(3, 16, 2))
    body.add_module("layer1", _block(16, 32, 2))
    body.add_module("layer2", _block(32, 32, 1))
    head = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(32, len(CLASSES), 1))
    net = FCN(IntermediateLayerGetter(body, {"layer2": "out"}), head)
    net.labels = CLASSES
    return net


# ------------------------------------------------------------------------------------------ synthetic scenes
def scene(gen: torch.Generator, kinds: tuple[int, ...] | None = None,
          places: list[tuple[float, float, float]] | None = None):
    """(image (3,S,S) in [0,1], boxes (K,4), labels (K,), mask (S,S)) for one scene.

    kinds: the shapes to draw (default: one or two at random); places: (cx, cy, side) in pixels per shape.
    """
    s = SIZE
    yy, xx = torch.meshgrid(torch.arange(s).float() + 0.5, torch.arange(s).float() + 0.5, indexing="ij")
    base = torch.rand(3, 1, 1, generator=gen) * 0.4 + 0.3
    texture = F.interpolate(torch.rand(1, 3, 8, 8, generator=gen), size=(s, s), mode="bilinear")[0]
    image = (0.6 * base + 0.4 * texture).clamp(0, 1) * 0.8 + 0.1
    image = image.mean(0, keepdim=True).expand(3, -1, -1).clone()  # grey, so colour means "object"
    if kinds is None:
        n = 1 + int(torch.randint(0, 2, (1,), generator=gen))
        kinds = tuple(int(k) for k in torch.randint(1, 3, (n,), generator=gen))
    mask = torch.zeros(s, s, dtype=torch.long)
    boxes, labels = [], []
    for i, kind in enumerate(kinds):
        if places is not None:
            cx, cy, side = places[i]
        else:
            for _ in range(50):  # a free spot
                side = float(torch.empty(1).uniform_(14, 24, generator=gen))
                cx, cy = (float(v) for v in torch.empty(2).uniform_(side / 2 + 1, s - side / 2 - 1, generator=gen))
                if all(max(abs(cx - (b[0] + b[2]) / 2), abs(cy - (b[1] + b[3]) / 2)) > (side + b[2] - b[0]) / 2 + 2
                       for b in boxes):
                    break
            else:
                continue
        if kind == 1:
            inside = ((xx - cx).abs() <= side / 2) & ((yy - cy).abs() <= side / 2)
        else:
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= (side / 2) ** 2
        shade = 0.85 + 0.15 * float(torch.rand(1, generator=gen))
        color = torch.tensor(COLORS[kind]).view(3, 1, 1) * shade
        image = torch.where(inside, color, image)
        mask[inside] = kind
        boxes.append([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
        labels.append(kind)
    return image, torch.tensor(boxes).reshape(-1, 4), torch.tensor(labels, dtype=torch.long), mask


def two_shapes(gen: torch.Generator | None = None):
    """A square on the left and a disk on the right (the scene the explain tests ask about)."""
    gen = gen or torch.Generator().manual_seed(123)
    return scene(gen, kinds=(1, 2), places=[(17.0, 30.0, 20.0), (46.0, 34.0, 20.0)])


def batch(gen: torch.Generator, n: int):
    scenes = [scene(gen) for _ in range(n)]
    return (torch.stack([s[0] for s in scenes]), [{"boxes": s[1], "labels": s[2]} for s in scenes],
            torch.stack([s[3] for s in scenes]))


# ------------------------------------------------------------------------------------------ training
def _train(factory, loss, steps: int, lr: float, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    """AdamW with a one-cycle schedule on fresh synthetic scenes every step; the eval-mode state dict."""
    torch.manual_seed(seed)  # before the factory: the initial weights are part of what the seed fixes
    gen = torch.Generator().manual_seed(seed)
    net = factory().train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    for _ in range(steps):
        value = loss(net, *batch(gen, batch_size))
        opt.zero_grad()
        value.backward()
        opt.step()
        sched.step()
    return net.eval().state_dict()


def train_detector(steps: int = 100, seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict of a detector that finds the shapes (a few seconds on one core)."""
    return _train(detector, lambda net, images, targets, _: sum(net(list(images), targets).values()),
                  steps, lr=1e-2, batch_size=6, seed=seed)


def train_segmenter(steps: int = 150, seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict of a segmenter that labels the shapes' pixels (a few seconds on one core)."""
    weight = torch.tensor([0.3, 1.0, 1.0])
    return _train(segmenter, lambda net, images, _, masks: F.cross_entropy(net(images)["out"], masks, weight=weight),
                  steps, lr=1e-2, batch_size=8, seed=seed)


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float tensors as float16: half the bytes of a fixture; load_state_dict casts them back to float32."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def save_trained(folder: str | Path) -> tuple[Path, Path]:
    """Train both models and save their state dicts (float16) as folder/tiny_detector.pth and
    folder/tiny_segmenter.pth."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    det, seg = folder / DETECTOR_WEIGHTS.name, folder / SEGMENTER_WEIGHTS.name
    torch.save(_half(train_detector()), det)
    torch.save(_half(train_segmenter()), seg)
    return det, seg


if __name__ == "__main__":  # python -m tests.tiny_tasks [FOLDER]: remake the shipped fixtures (or write elsewhere)
    import sys

    torch.set_num_threads(1)  # the thread count changes reductions' order, hence the trained weights
    print(*save_trained(sys.argv[1] if len(sys.argv) > 1 else FIXTURES), sep="\n")

