"""`fool` and `patch` on detectors and segmenters: on the tiny trained models a box vanishes and pixels change
class *on the saved PNG*, read back and run again; the candidate scores of every torchvision detector family
are the scores its detections report; a vanishing patch beats a noise patch on new scenes."""
from __future__ import annotations

import json

import pytest
import torch
import torchvision
from typer.testing import CliRunner

import deepprobe as dp
from deepprobe.cli import app
from deepprobe.io import save_png

DET = "python:tests.tiny_tasks:detector"
SEG = "python:tests.tiny_tasks:segmenter"
FAST = "2/255"  # DAG's step; the paper's 0.5/255 takes ~4x the steps on these colour-keyed tiny models


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result, (json.loads(result.stdout) if "--json" in args and result.exit_code == 0 else None)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from tests.tiny_tasks import two_shapes

    folder = tmp_path_factory.mktemp("shapes")
    save_png(two_shapes()[0], folder / "shapes.png")
    return folder / "shapes.png"


def test_vanish_hides_the_square_on_the_saved_png(tiny_tasks, shapes, tmp_path):
    result, summary = _cli("fool", str(shapes), "--model", DET, "--weights", str(tiny_tasks[0]), "--vanish", "square",
                           "--alpha", FAST, "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    row = summary["results"][0]
    assert row["success"] and row["checked_on"] == "saved PNG" and row["goal"] == "vanish square"
    assert sorted(d["class"] for d in row["before"]["detections"]) == ["disk", "square"]
    # an independent run on the file as written: the square is gone, the disk (not asked) is still there
    probe = dp.load_model(DET, weights=str(tiny_tasks[0]), device="cpu")
    found = dp.detect(probe, probe.load_image(row["output"]), min_score=0.5)[0]
    assert found.names == ["disk"]
    assert (tmp_path / "shapes_fool_vanish_square_panel.png").is_file()


def test_vanish_all_through_the_api(tiny_tasks, shapes):
    probe = dp.load_model(DET, weights=str(tiny_tasks[0]), device="cpu")
    x = probe.load_image(shapes)
    res = dp.fool_detector(probe, x, vanish="all", alpha=2 / 255)
    assert bool(res.success[0]) and len(res.before[0]) == 2 and len(res.after[0]) == 0
    assert torch.equal(res.images, torch.round(res.images * 255) / 255)  # what a PNG holds
    assert len(dp.detect(probe, res.images, min_score=0.5)[0]) == 0
    assert res.steps[0] > 0 and res.losses[0] > res.losses[-1]


def test_pgd_stays_inside_its_budget(tiny_tasks, shapes):
    probe = dp.load_model(DET, weights=str(tiny_tasks[0]), device="cpu")
    x = probe.load_image(shapes)
    res = dp.fool_detector(probe, x, vanish="all", method="pgd", eps=8 / 255, steps=5, rounds=0)
    assert float((res.images - x).abs().max()) <= 8 / 255 + 1e-6
    assert res.method == "pgd" and res.steps[0] <= 5
    bounded = dp.fool_detector(probe, x, vanish="all", eps=4 / 255, alpha=2 / 255, steps=5, rounds=0)  # DAG + eps
    assert float((bounded.images - x).abs().max()) <= 4 / 255 + 1e-6 and bounded.method == "dag"


def test_segmenter_turns_the_square_into_disk_on_the_saved_png(tiny_tasks, shapes, tmp_path):
    from tests.tiny_tasks import two_shapes

    result, summary = _cli("fool", str(shapes), "--model", SEG, "--weights", str(tiny_tasks[1]), "--target", "disk",
                           "--source", "square", "--alpha", FAST, "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    row = summary["results"][0]
    assert row["success"] and row["share"] >= 0.99 and row["goal"] == "square -> disk"
    probe = dp.load_model(SEG, weights=str(tiny_tasks[1]), device="cpu")
    after = dp.segment(probe, probe.load_image(row["output"]))[0]
    mask = two_shapes()[3]
    square, disk = mask == 1, mask == 2
    assert float((after.mask[square] == 2).float().mean()) > 0.97  # the square's pixels now read as disk
    assert float((after.mask[disk] == 2).float().mean()) > 0.9  # the disk is left alone
    assert 1 not in after.present()


def test_segmenter_vanish_turns_pixels_into_background(tiny_tasks, shapes):
    probe = dp.load_model(SEG, weights=str(tiny_tasks[1]), device="cpu")
    res = dp.fool_segmenter(probe, probe.load_image(shapes), vanish="disk", alpha=2 / 255)
    assert bool(res.success[0]) and 2 not in res.after[0].present() and 1 in res.after[0].present()


def test_relabelling_pushes_the_source_class_towards_the_target(tiny_tasks, shapes):
    """A relabel is harder than a vanish on these colour-keyed models (the disk would have to turn red): within
    90 steps the disk's box must lose confidence and DAG's loss (source minus target score over the candidates
    still holding the source class) must halve; the square (not a source) keeps its box."""
    probe = dp.load_model(DET, weights=str(tiny_tasks[0]), device="cpu")
    x = probe.load_image(shapes)
    res = dp.fool_detector(probe, x, target="square", source="disk", alpha=2 / 255, steps=90, rounds=0)
    assert res.goal == "relabel disk -> square"
    before, after = res.before[0], dp.detect(probe, res.images, min_score=0.05)[0]
    disk_before = float(before.scores[before.labels == 2].max())
    disk_after = float(after.scores[after.labels == 2].max()) if (after.labels == 2).any() else 0.0
    assert disk_after < disk_before - 0.05, (disk_before, disk_after)
    assert res.losses[-1] < res.losses[0] / 2
    assert float(after.scores[after.labels == 1].max()) > 0.9


def _factory(name: str, **kwargs):
    return lambda: torchvision.models.get_model(name, weights=None, weights_backbone=None, **kwargs)


retinanet = _factory("retinanet_resnet50_fpn", num_classes=3, min_size=96, max_size=96)
fcos = _factory("fcos_resnet50_fpn", num_classes=3, min_size=96, max_size=96)
ssdlite = _factory("ssdlite320_mobilenet_v3_large", num_classes=3)
frcnn = _factory("fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=3)


@pytest.mark.parametrize("name", ["retinanet", "fcos", "ssdlite", "frcnn"])
def test_candidate_scores_are_the_detection_scores(name):
    """Every detection's score is a candidate's probability of its class, and the best candidate of a class
    survives suppression: per class, the best candidate score *is* the best detection score -- what lets attacks
    push detections below a threshold without running the post-processing."""
    from deepprobe.engine import forward
    from deepprobe.models.candidates import candidate_spec

    torch.manual_seed(0)
    probe = dp.load_model(f"python:tests.test_tasks_fool:{name}", device="cpu")
    for module in probe.inner.modules():  # random heads score everything alike: spread them out
        if isinstance(module, torch.nn.Conv2d) and module.out_channels <= 27:
            torch.nn.init.normal_(module.weight, std=0.05)
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    found = dp.detect(probe, x, min_score=0.0)[0]
    spec = candidate_spec(probe)
    probs = spec.read(forward(probe, x, spec.layers, need_logits=False).activations)[0]
    assert len(found) and probs.shape[1] == 3
    for cls in found.labels.unique().tolist():
        best = float(found.scores[found.labels == cls].max())
        assert float(probs[:, cls].max()) == pytest.approx(best, abs=1e-5), cls


@pytest.mark.slow
def test_vanishing_patch_beats_noise_on_new_scenes(tiny_tasks, tmp_path):
    from deepprobe.techniques.patch import random_patch
    from deepprobe.techniques.patch_detection import apply_vanish_patch, train_vanish_patch
    from tests.tiny_tasks import scene

    probe = dp.load_model(DET, weights=str(tiny_tasks[0]), device="cpu")
    gen = torch.Generator().manual_seed(5)
    train = torch.stack([scene(gen, kinds=(1,))[0] for _ in range(12)])
    test = torch.stack([scene(gen, kinds=(1,))[0] for _ in range(12)])
    result = train_vanish_patch(probe, train, "square", steps=60, seed=0)
    learned = apply_vanish_patch(probe, test, result.patch, "square", seed=3)
    noise = apply_vanish_patch(probe, test, random_patch(result.patch.shape[-1]), "square", seed=3)
    assert learned.hidden_rate >= noise.hidden_rate + 0.2, (learned.hidden_rate, noise.hidden_rate)
    assert result.train_hidden > result.noise_hidden


def test_patch_cli_train_and_apply_on_a_detector(tiny_tasks, tmp_path):
    from tests.tiny_tasks import scene

    gen = torch.Generator().manual_seed(9)
    for folder, n in (("train", 6), ("new", 3)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            save_png(scene(gen, kinds=(1, 2))[0], tmp_path / folder / f"s{i}.png")
    common = ["--model", DET, "--weights", str(tiny_tasks[0]), "--out", str(tmp_path / "out"), "--json"]
    result, summary = _cli("patch", "train", str(tmp_path / "train"), "--vanish", "square", "--steps", "10", *common)
    assert result.exit_code == 0, result.output
    row = summary["results"][0]
    assert row["vanish"] == ["square"] and 0 <= row["train_hidden_rate"] <= 1 and "noise_patch_hidden_rate" in row
    result, summary = _cli("patch", "apply", row["output"], str(tmp_path / "new"), *common)
    assert result.exit_code == 0, result.output
    assert summary["boxes"] == 3 and len(summary["results"]) == 3  # one square per scene, each patched
    assert all(len(r["placements"]) == 1 for r in summary["results"])
