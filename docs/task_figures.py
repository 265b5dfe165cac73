"""Make docs/detection_panel.jpg and docs/segmentation_panel.jpg from the tiny shape detector and segmenter.

No detector or segmenter weights exist offline, so this uses the test suite's tiny models (tests/tiny_tasks.py:
a torchvision FasterRCNN and FCN trained on 64 px scenes with a red square and a blue disk; the trained weights
are shipped in tests/fixtures/) and runs on them what the README's commands run: classify, explain (one map per
box / per class) and fool (DAG, checked on the saved PNG).

    python docs/task_figures.py             # about half a minute on 2 CPU cores
    python docs/task_figures.py --retrain   # train the models afresh (they differ between CPUs) instead
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import deepprobe as dp  # noqa: E402
from deepprobe.io import quantize, save_png  # noqa: E402
from deepprobe.render import draw_detections, draw_segmentation, grid, overlay, segmentation_caption  # noqa: E402
from tests.tiny_tasks import DETECTOR_WEIGHTS, SEGMENTER_WEIGHTS, save_trained, two_shapes  # noqa: E402

CELL = 200


def _amplified(adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (0.5 + 2 * (adv - x)).clamp(0, 1)[0]


def detection(det: dp.ModelBundle, x: torch.Tensor, folder: Path) -> None:
    found = dp.detect(det, x, min_score=0.5)[0]
    maps = dp.explain(det, x, "hirescam")[0]
    res = dp.fool_detector(det, x, vanish="square", alpha=2 / 255)
    save_png(res.images[0], folder / "vanished.png")
    after = dp.detect(det, det.load_image(folder / "vanished.png"), min_score=0.5)[0]  # the saved PNG, read back
    tiles = [draw_detections(x[0], found)]
    captions = ["classify: " + ", ".join(f"{n} {float(s):.2f}" for n, s in zip(found.names, found.scores))]
    for k, name in enumerate(maps.detections.names):
        tiles.append(draw_detections(overlay(x[0], maps.maps[k].numpy()), maps.detections.select(torch.tensor([k]))))
        captions.append(f"explain hirescam: the {name} box")
    tiles += [_amplified(res.images, x), draw_detections(res.images[0], after)]
    linf = float((res.images - x).abs().max()) * 255
    captions += [f"DAG perturbation x2 (L-inf {linf:.0f}/255)",
                 "fool --vanish square: saved PNG: " + (", ".join(after.names) or "no box")]
    figure = grid(tiles, captions, columns=len(tiles), cell=CELL,
                  title="tiny FasterRCNN (python:tests.tiny_tasks:detector): boxes, one map per box, a box made to vanish")
    figure.save(ROOT / "docs" / "detection_panel.jpg", quality=85)


def segmentation(seg: dp.ModelBundle, x: torch.Tensor, folder: Path) -> None:
    parts = dp.segment(seg, x)[0]
    tiles, captions = [draw_segmentation(x[0], parts)], ["classify: " + segmentation_caption(parts)]
    for name in ("square", "disk"):
        tiles.append(overlay(x[0], dp.explain(seg, x, "gradcam", target=name)[0].numpy()))
        captions.append(f"explain gradcam --target {name}")
    res = dp.fool_segmenter(seg, x, target="disk", source="square", alpha=2 / 255)
    save_png(res.images[0], folder / "relabelled.png")
    after = dp.segment(seg, seg.load_image(folder / "relabelled.png"))[0]
    linf = float((res.images - x).abs().max()) * 255
    tiles += [_amplified(res.images, x), draw_segmentation(res.images[0], after)]
    captions += [f"DAG perturbation x2 (L-inf {linf:.0f}/255)",
                 "fool --target disk --source square: saved PNG: " + segmentation_caption(after)]
    figure = grid(tiles, captions, columns=len(tiles), cell=CELL,
                  title="tiny FCN (python:tests.tiny_tasks:segmenter): classes, a map per class, square pixels made disk")
    figure.save(ROOT / "docs" / "segmentation_panel.jpg", quality=85)


def main() -> None:
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp())
    det_w, seg_w = save_trained(folder) if "--retrain" in sys.argv[1:] else (DETECTOR_WEIGHTS, SEGMENTER_WEIGHTS)
    det = dp.load_model("python:tests.tiny_tasks:detector", weights=str(det_w), device="cpu")
    seg = dp.load_model("python:tests.tiny_tasks:segmenter", weights=str(seg_w), device="cpu")
    save_png(two_shapes()[0], folder / "shapes.png")
    x = quantize(det.load_image(folder / "shapes.png"))
    detection(det, x, folder)
    segmentation(seg, x, folder)
    print("wrote docs/detection_panel.jpg and docs/segmentation_panel.jpg; models and images in", folder)


if __name__ == "__main__":
    main()
