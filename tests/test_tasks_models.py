"""Detectors and segmenters as model specs: torchvision builders offline (nothing downloaded, sockets blocked),
the weights file's class count, COCO/VOC names, python: networks judged by their output, `classify` per task,
`deepprobe models`, and one-line refusals where a command does not apply."""
from __future__ import annotations

import json
import socket

import pytest
import torch
import torchvision
from typer.testing import CliRunner

import deepprobe as dp
from deepprobe.cli import app
from deepprobe.errors import DeepprobeError

DET = "python:tests.tiny_tasks:detector"
SEG = "python:tests.tiny_tasks:segmenter"


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result, (json.loads(result.stdout) if "--json" in args and result.exit_code == 0 else None)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket (a download) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name, kwargs, classes, task", [
    ("fasterrcnn_mobilenet_v3_large_320_fpn", {"num_classes": 5}, 5, "detection"),
    ("ssdlite320_mobilenet_v3_large", {}, 91, "detection"),
    ("lraspp_mobilenet_v3_large", {"num_classes": 4}, 4, "segmentation"),
    ("deeplabv3_mobilenet_v3_large", {"aux_loss": True}, 21, "segmentation"),
])
def test_torchvision_spec_loads_a_state_dict_offline(tmp_path, no_network, name, kwargs, classes, task):
    """The builders default to downloading an ImageNet backbone; the spec must not, and must take the class
    count (and the auxiliary head) from the file. The loaded network equals the saved one, output for output."""
    torch.manual_seed(0)
    ref = torchvision.models.get_model(name, weights=None, weights_backbone=None, **kwargs).eval()
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    probe = dp.load_model(f"torchvision:{name}", weights=str(tmp_path / "w.pth"), device="cpu")
    assert probe.task == task and probe.num_classes == classes
    if classes == 91:
        assert probe.labels[1] == "person" and len(probe.labels) == 91  # COCO names from the weights enum
    elif classes == 21:
        assert probe.labels[15] == "person" and probe.labels[0] == "__background__"  # VOC
    else:
        assert probe.labels is None  # no names for another class count
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        out = probe.net(x)
        if task == "segmentation":
            mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
            torch.testing.assert_close(out, ref((x - mean) / std)["out"])
        else:
            expected = ref(list(x))
            torch.testing.assert_close(out[0]["scores"], expected[0]["scores"])


def test_a_checkpoint_saved_from_frozen_batchnorm_loads(tmp_path, no_network):
    """torchvision's own COCO files come from FrozenBatchNorm2d backbones (no num_batches_tracked keys)."""
    ref = torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None, weights_backbone=None)
    state = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "coco_style.pth")
    probe = dp.load_model("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", weights=str(tmp_path / "coco_style.pth"),
                          device="cpu")
    assert probe.task == "detection" and probe.labels[1] == "person"


def test_weights_of_another_architecture_are_one_clear_error(tmp_path):
    ref = torchvision.models.get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None)
    torch.save(ref.state_dict(), tmp_path / "seg.pth")
    with pytest.raises(DeepprobeError, match="do not fit the architecture"):
        dp.load_model("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", weights=str(tmp_path / "seg.pth"))


def test_python_networks_are_judged_by_their_output(tiny_tasks):
    det, seg = tiny_tasks
    d = dp.load_model(DET, weights=str(det), device="cpu")
    s = dp.load_model(SEG, weights=str(seg), device="cpu")
    assert (d.task, s.task) == ("detection", "segmentation")
    assert d.labels == s.labels == ["__background__", "square", "disk"]  # the factory's .labels
    assert d.preprocess.crop is None and s.preprocess.crop is None  # no centre crop: boxes stay where they are
    assert dp.load_model("efficientnet_lite0", device="cpu").task == "classification"


def test_a_saved_image_re_enters_unchanged_and_large_ones_shrink(tiny_tasks):
    det, _ = tiny_tasks
    probe = dp.load_model(DET, weights=str(det), device="cpu")
    small = torch.rand(1, 3, 48, 60)
    assert torch.equal(probe.prepare(small), small)
    big = probe.prepare(torch.rand(1, 3, 200, 300))
    assert tuple(big.shape[-2:]) == (64, 96)  # short side down to the detector's own input size, aspect kept


def test_classify_finds_the_shapes(tiny_tasks):
    from tests.tiny_tasks import two_shapes

    det, seg = tiny_tasks
    image, boxes, labels, mask = two_shapes()
    found = dp.classify(dp.load_model(DET, weights=str(det), device="cpu"), image[None])[0]
    assert sorted(found.names) == ["disk", "square"]
    iou = torchvision.ops.box_iou(found.boxes, boxes)
    for k, name in enumerate(found.names):  # each box sits on the shape of its class
        assert iou[k, labels.tolist().index(1 if name == "square" else 2)] > 0.7
    parts = dp.classify(dp.load_model(SEG, weights=str(seg), device="cpu"), image[None])[0]
    assert set(parts.present()) == {1, 2}
    for cls in (1, 2):
        agree = ((parts.mask == cls) & (mask == cls)).sum() / ((parts.mask == cls) | (mask == cls)).sum()
        assert agree > 0.85, (cls, agree)
        assert abs(parts.areas[cls] - float((mask == cls).float().mean())) < 0.03


def test_classify_cli_draws_boxes_and_masks(tiny_tasks, tmp_path):
    from deepprobe.io import save_png
    from tests.tiny_tasks import two_shapes

    det, seg = tiny_tasks
    save_png(two_shapes()[0], tmp_path / "shapes.png")
    result, summary = _cli("classify", str(tmp_path / "shapes.png"), "--model", DET, "--weights", str(det),
                           "--out", str(tmp_path / "out"), "--json", "--min-score", "0.5")
    assert result.exit_code == 0, result.output
    row = summary["results"][0]
    assert sorted(d["class"] for d in row["detections"]) == ["disk", "square"]
    assert all(d["score"] >= 0.5 and len(d["box"]) == 4 for d in row["detections"])
    drawn = tmp_path / "out" / "shapes_detections.png"
    assert drawn.is_file() and json.loads(drawn.with_suffix(".json").read_text())["result"]["detections"]
    result, summary = _cli("classify", str(tmp_path / "shapes.png"), "--model", SEG, "--weights", str(seg),
                           "--out", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    classes = {c["class"]: c["area"] for c in summary["results"][0]["classes"]}
    assert set(classes) == {"__background__", "square", "disk"} and abs(sum(classes.values()) - 1) < 1e-4
    assert (tmp_path / "out" / "shapes_segmentation.png").is_file()


def test_models_lists_the_task_specs():
    result, summary = _cli("models", "--json")
    assert result.exit_code == 0
    tasks = {row["spec"]: row["task"] for row in summary["spec_forms"]}
    for name in ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn", "retinanet_resnet50_fpn",
                 "ssdlite320_mobilenet_v3_large"):
        assert tasks[f"torchvision:{name}"] == "detection"
    for name in ("fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"):
        assert tasks[f"torchvision:{name}"] == "segmentation"
    assert tasks["efficientnet_lite0"] == "classification"


@pytest.mark.parametrize("args, says", [
    (["evaluate", "IMG", "--method", "gradcam"], "evaluate does not apply"),
    (["explain", "IMG", "--method", "rollout"], "rollout does not apply"),
    (["fool", "IMG", "--target", "disk", "--method", "cw"], "--method cw does not apply"),
    (["fool", "IMG", "--vanish", "all", "--target", "disk"], "say what to do"),
    (["patch", "train", "IMG", "--target", "disk"], "say which class the patch hides"),
])
def test_commands_that_do_not_apply_say_so_in_one_line(tiny_tasks, tmp_path, args, says):
    from deepprobe.io import save_png
    from tests.tiny_tasks import two_shapes

    save_png(two_shapes()[0], tmp_path / "shapes.png")
    args = [str(tmp_path / "shapes.png") if a == "IMG" else a for a in args]
    result, _ = _cli(*args, "--model", DET, "--weights", str(tiny_tasks[0]), "--out", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2  # one line (rich may wrap a long one)
