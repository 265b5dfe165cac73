"""`explain` on detectors and segmenters: the explained numbers and the CAMs equal pytorch-grad-cam's
(FasterRCNNBoxScoreTarget, SemanticSegmentationTarget) on randomly initialised torchvision models, and on the
tiny trained models every map lands on the shape it was asked about."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from typer.testing import CliRunner

import deepprobe as dp
from deepprobe.cli import app
from deepprobe.explain.cam import gradcam, hirescam
from deepprobe.explain.tasks import box_score, default_task_layer, mask_score, score_view

DET = "python:tests.tiny_tasks:detector"
SEG = "python:tests.tiny_tasks:segmenter"
FAST = {"ig": dict(steps=8), "smoothgrad": dict(samples=4), "occlusion": dict(window=8, stride=4)}


@pytest.fixture(scope="module")
def random_frcnn(tmp_path_factory):
    """torchvision's cheapest detector, randomly initialised with 3 classes (so it detects something)."""
    torch.manual_seed(0)
    net = torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None,
                                       weights_backbone=None, num_classes=3)
    path = tmp_path_factory.mktemp("frcnn") / "w.pth"
    torch.save(net.state_dict(), path)
    probe = dp.load_model("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", weights=str(path), device="cpu")
    x = torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(1))
    return probe, x, dp.detect(probe, x, min_score=0.3)[0]


def _reference_cam(cam_class, probe, layer, x, targets):
    """pytorch-grad-cam's raw CAM at the layer's resolution (before its own scaling and resizing)."""
    cam = cam_class(probe.net, [probe.layer(layer)])
    cam(x.clone().requires_grad_(), targets)
    acts = cam.activations_and_grads.activations[0].numpy()
    grads = cam.activations_and_grads.gradients[0].numpy()
    return np.maximum(cam.get_cam_image(x, probe.layer(layer), targets, acts, grads, False), 0)[0]


def test_box_score_equals_fasterrcnn_box_score_target(random_frcnn):
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    probe, x, found = random_frcnn
    assert len(found) >= 2
    outputs = probe.net(x)[0]
    for k in range(3):
        box, label = found.boxes[k], int(found.labels[k])
        ref = FasterRCNNBoxScoreTarget([label], [box.numpy()])(outputs)
        assert float(box_score(outputs, box, label)) == pytest.approx(float(ref), abs=1e-6)
        assert float(box_score(outputs, box, label)) == pytest.approx(1 + float(found.scores[k]), abs=1e-5)
        wrong = (label + 1) % 3
        assert float(box_score(outputs, box, wrong)) == float(FasterRCNNBoxScoreTarget([wrong], [box.numpy()])(outputs))


@pytest.mark.parametrize("name, ours", [("GradCAM", gradcam), ("HiResCAM", hirescam)])
def test_detector_cams_equal_pytorch_grad_cam(random_frcnn, name, ours):
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    probe, x, found = random_frcnn
    layer = default_task_layer(probe, x)
    assert layer == "backbone.body.16"  # the backbone's last stage: every FPN level depends on it
    for k in (0, 1):
        box, label = found.boxes[k], int(found.labels[k])
        view = score_view(probe, lambda outs, b=box, c=label: torch.stack([box_score(o, b, c) for o in outs]))
        mine = ours(view, x, torch.tensor([0]), layer=layer)[0].numpy()
        ref = _reference_cam(getattr(pgc, name), probe, layer, x, [FasterRCNNBoxScoreTarget([label], [box.numpy()])])
        assert ref.max() > 0
        np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-6 * float(ref.max()))


def test_segmenter_cam_equals_pytorch_grad_cam(tmp_path):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    torch.manual_seed(0)
    net = torchvision.models.get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=3)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    probe = dp.load_model("torchvision:lraspp_mobilenet_v3_large", weights=str(tmp_path / "w.pth"), device="cpu")
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    seg = dp.segment(probe, x)[0]
    cls = seg.present(with_background=True)[0]
    mask = (seg.mask == cls).float()
    logits = probe.net(x)
    ref_target = SemanticSegmentationTarget(cls, mask.numpy())
    assert float(mask_score(logits, cls, mask)[0]) == pytest.approx(float(ref_target(logits[0])), rel=1e-6)
    layer = default_task_layer(probe, x)
    assert layer == "backbone.16"
    view = score_view(probe, lambda out: mask_score(out, cls, mask))
    mine = gradcam(view, x, torch.tensor([0]), layer=layer)[0].numpy()
    ref = _reference_cam(GradCAM, probe, layer, x, [ref_target])
    np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-6 * float(ref.max()))


# ------------------------------------------------------------------------------------------ on the trained models
@pytest.fixture(scope="module")
def scene():
    from tests.tiny_tasks import two_shapes

    image, boxes, labels, mask = two_shapes()
    return image[None], mask


def _inside(maps: torch.Tensor, region: torch.Tensor) -> float:
    return float(maps[..., region].sum() / maps.sum())


@pytest.mark.parametrize("method", ["hirescam", "saliency", "guided-backprop", "ig"])
def test_each_box_map_lands_on_its_box(tiny_tasks, scene, method):
    x, mask = scene
    probe = dp.load_model(DET, weights=str(tiny_tasks[0]), device="cpu")
    result = dp.explain(probe, x, method, **FAST.get(method, {}))[0]
    assert sorted(result.detections.names) == ["disk", "square"] and result.maps.shape == (2, 64, 64)
    for name, heat in zip(result.detections.names, result.maps):
        own, other = mask == (1 if name == "square" else 2), mask == (2 if name == "square" else 1)
        assert _inside(heat, own) > 2 * _inside(heat, other), (name, _inside(heat, own), _inside(heat, other))
        assert _inside(heat, own) > 0.2  # the shapes cover 8-10% of the image


def test_target_picks_the_boxes_explained(tiny_tasks, scene):
    x, _ = scene
    probe = dp.load_model(DET, weights=str(tiny_tasks[0]), device="cpu")
    only = dp.explain(probe, x, "hirescam", target="disk")[0]
    assert only.detections.names == ["disk"] and only.maps.shape[0] == 1


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "saliency", "occlusion"])
def test_segment_map_lands_on_the_class_asked_for(tiny_tasks, scene, method):
    x, mask = scene
    probe = dp.load_model(SEG, weights=str(tiny_tasks[1]), device="cpu")
    for name, cls in (("square", 1), ("disk", 2)):
        heat = dp.explain(probe, x, method, target=name, **FAST.get(method, {}))[0]
        assert _inside(heat, mask == cls) > 2 * _inside(heat, mask == 3 - cls), (name, method)


def test_explain_cli_writes_one_map_per_box(tiny_tasks, tmp_path):
    from deepprobe.io import save_png
    from tests.tiny_tasks import two_shapes

    image, _, _, mask = two_shapes()
    save_png(image, tmp_path / "shapes.png")
    result = CliRunner().invoke(app, ["explain", str(tmp_path / "shapes.png"), "--model", DET, "--weights",
                                      str(tiny_tasks[0]), "--method", "hirescam", "--method", "saliency",
                                      "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["cam_layer"] == "backbone" and len(summary["results"]) == 2
    # boxes come in score order, and the two scores are close (their order differs between CPUs): each file is
    # named by its own box's rank and class, and its map lands on that box's shape
    assert sorted(row["class"] for row in summary["results"]) == ["disk", "square"]
    assert sorted(row["box_index"] for row in summary["results"]) == [0, 1]
    for row in summary["results"]:
        assert set(row["methods"]) == {"hirescam", "saliency"} and row["panel"].endswith("_panel.png")
        stem = tmp_path / "out" / f"shapes_hirescam_box{row['box_index']}_{row['class']}"
        assert row["methods"]["hirescam"]["map"] == str(stem.with_suffix(".npy"))
        assert stem.with_suffix(".png").is_file()
        heat = torch.from_numpy(np.load(stem.with_suffix(".npy")))
        assert heat.shape == (64, 64) and 0 <= heat.min() and heat.max() <= 1
        own = 1 if row["class"] == "square" else 2
        assert _inside(heat, mask == own) > 2 * _inside(heat, mask == 3 - own), row["class"]


def test_explain_cli_on_a_class_the_segmenter_does_not_see(tiny_tasks, tmp_path):
    from deepprobe.io import save_png
    from tests.tiny_tasks import scene

    save_png(scene(torch.Generator().manual_seed(7), kinds=(1,))[0], tmp_path / "square.png")
    result = CliRunner().invoke(app, ["explain", str(tmp_path / "square.png"), "--model", SEG, "--weights",
                                      str(tiny_tasks[1]), "--target", "disk", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "gives no pixel to disk" in result.output and not (tmp_path / "out").exists()
