"""Segment Anything and Depth Anything through `hf:DIR`, and depth nets through `python:`.

No SAM or Depth Anything weights exist offline: tiny random models are built from configs and saved with
save_pretrained plus their processors (tests/tiny_foundation.py), with the network blocked while they load.
Random weights make a weak judge of behaviour, so each property is checked where it means something:
- SAM: the geometry against transformers' own SamProcessor and post_process_masks (prompt coordinates, masks
  at the photo's size), one vision-encoder pass for several prompts, and the vanishing attack on the saved PNG
  (the property "the chosen mask overlaps the clean one by IoU < 0.1 inside eps" holds on any model);
- depth: Depth Anything against transformers' processor and post-processing, and the analytic BrightnessDepth
  net (depth = exp(8 * (5x5 mean brightness - 0.5))) for what explain and fool must do: the map stays on the
  region, and the region's depth moves by the asked factor on the saved PNG while the rest barely moves.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import deepprobe as dp
from deepprobe.cli import app
from deepprobe.explain.attributions import clip_outliers
from deepprobe.io import read_image
from deepprobe.models.sam import model_frame, sam_of, to_model_coords
from deepprobe.models.sam_masks import mask_iou
from tiny_foundation import SAM_SIZE, brightness_depth_of, depth_processor, save_depth_anything, save_sam

BRIGHT = "python:tiny_foundation:brightness_depth"


def run_cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def sidecar_results(out, pattern: str) -> list[dict]:
    return [json.loads(p.read_text())["result"] for p in sorted(out.glob(pattern))]


@pytest.fixture(scope="session")
def sam_dir(tmp_path_factory):
    return save_sam(tmp_path_factory.mktemp("tiny_sam"))


@pytest.fixture(scope="session")
def depth_dir(tmp_path_factory):
    return save_depth_anything(tmp_path_factory.mktemp("tiny_depth_anything"))


@pytest.fixture(scope="session")
def sam(sam_dir):
    return dp.load_model(f"hf:{sam_dir}", device="cpu")


@pytest.fixture(scope="session")
def depth_anything(depth_dir):
    return dp.load_model(f"hf:{depth_dir}", device="cpu")


@pytest.fixture(scope="session")
def bright():
    return dp.load_model(BRIGHT, device="cpu")


def test_new_models_load_offline_and_are_listed(sam_dir, depth_dir, attempts):
    assert dp.load_model(f"hf:{sam_dir}", device="cpu").task == "promptable-segmentation"
    assert dp.load_model(f"hf:{depth_dir}", device="cpu").task == "depth"
    assert not attempts
    res = run_cli("models", "--json")
    forms = {row["spec"]: row["task"] for row in json.loads(res.stdout)["spec_forms"]}
    assert forms["hf:DIR (SamModel)"] == "promptable-segmentation"
    assert forms["hf:DIR (DepthAnythingForDepthEstimation)"] == "depth"


# ------------------------------------------------------------------------------------------ Segment Anything
@pytest.mark.parametrize("size", [(266, 400), (900, 1200), (1024, 700)])
def test_prompt_coordinates_are_mapped_as_sam_processor_maps_them(size, sam_dir):
    """Points and boxes in the photo's pixels -> the model's frame: against SamProcessor's own output, for the
    real 1024 frame and the tiny model's."""
    from transformers import SamProcessor

    height, width = size
    photo = Image.new("RGB", (width, height))
    point, box = [0.37 * width, 0.81 * height], [0.1 * width, 0.2 * height, 0.9 * width, 0.7 * height]
    tiny = SamProcessor.from_pretrained(sam_dir)
    real = SamProcessor(image_processor=type(tiny.image_processor)())  # SAM's defaults: 1024
    for processor, longest in ((tiny, SAM_SIZE), (real, 1024)):
        theirs = processor(images=photo, input_points=[[point]], input_boxes=[[box]], return_tensors="pt")
        assert list(theirs["reshaped_input_sizes"][0]) == list(model_frame(height, width, longest))
        ours_point = to_model_coords(torch.tensor(point, dtype=torch.float64), height, width, longest)
        ours_box = to_model_coords(torch.tensor(box, dtype=torch.float64).view(2, 2), height, width, longest)
        assert torch.allclose(ours_point, theirs["input_points"][0, 0, 0], atol=1e-6)
        assert torch.allclose(ours_box.flatten(), theirs["input_boxes"][0, 0].double(), atol=1e-4)


def test_masks_are_those_of_transformers_at_the_photo_size(sam_dir, sam, examples):
    """SAM's three masks and IoU scores for a point and a box, as SamProcessor + SamModel + post_process_masks
    give them, at the photo's own size (266 x 400), with the embedding computed once for both prompts."""
    from transformers import SamModel, SamProcessor

    model = SamModel.from_pretrained(sam_dir).eval()
    processor = SamProcessor.from_pretrained(sam_dir)
    photo = Image.open(examples / "cat.jpg").convert("RGB")
    x = sam.load_image(examples / "cat.jpg")
    assert tuple(x.shape[-2:]) == (photo.height, photo.width)  # the photo keeps its size
    calls = []
    hook = sam.inner.vision_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        found = dp.segment_prompts(sam, x, [dp.Prompt.point(120, 60), dp.Prompt.of_box(40, 30, 260, 200)])[0]
    finally:
        hook.remove()
    assert len(calls) == 1  # one image embedding served both prompts
    for ours, prompt in zip(found, ({"input_points": [[[120, 60]]]}, {"input_boxes": [[[40, 30, 260, 200]]]})):
        inputs = processor(images=photo, return_tensors="pt", **prompt)
        with torch.no_grad():
            out = model(**inputs)
        logits = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"],
                                              binarize=False)[0][0]
        assert ours.masks.shape == (3, photo.height, photo.width) == logits.shape
        assert (ours.masks == (logits > 0)).float().mean() > 0.99  # resampling differs a little at mask edges
        assert (ours.scores - out.iou_scores[0, 0]).abs().max() < 0.01
        assert ours.chosen == int(out.iou_scores[0, 0].argmax())
        assert 0.02 < float(ours.mask.float().mean()) < 0.98  # a mask worth comparing


def test_fool_makes_the_mask_vanish_on_the_saved_png(sam, sam_dir, examples, tmp_path):
    res = run_cli("fool", examples / "cat.jpg", "--model", f"hf:{sam_dir}", "--point", "120,60", "--box",
                  "40,30,260,200", "--kappa", "0.05", "--out", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    results = json.loads(res.stdout)["results"]
    clean = sam.load_image(examples / "cat.jpg")
    original = np.asarray(Image.open(examples / "cat.jpg").convert("RGB"), dtype=np.int16)
    for record, prompt in zip(results, (dp.Prompt.point(120, 60), dp.Prompt.of_box(40, 30, 260, 200))):
        saved = np.asarray(Image.open(record["output"]).convert("RGB"), dtype=np.int16)
        assert np.abs(saved - original).max() <= 8  # inside the default budget, 8/255
        # an independent verdict: a fresh model, the saved file, the same prompt
        before = dp.segment_prompts(sam, clean, [prompt])[0][0]
        after = dp.segment_prompts(sam, sam.load_image(record["output"]), [prompt])[0][0]
        assert before.mask.float().mean() > 0.02
        assert float(mask_iou(after.mask, before.mask)) < 0.1
        assert record["success"] and record["iou_with_clean"] < 0.1
    report = run_cli("report", tmp_path, "--output", tmp_path / "report.html")
    assert report.exit_code == 0, report.output
    html = (tmp_path / "report.html").read_text()
    assert "cat_fool_vanish_point_120_60_panel.png" in html and "iou_with_clean" in html


def test_classify_and_explain_on_sam(sam, sam_dir, examples, tmp_path):
    """classify draws the three masks with their scores; explain's saliency is |d(chosen mask's logits summed
    over the mask) / d pixel|, recomputed here with autograd."""
    res = run_cli("classify", examples / "cat.jpg", "--model", f"hf:{sam_dir}", "--point", "120,60",
                  "--out", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)["results"][0]
    masks = np.load(record["masks_file"])
    assert masks.shape == (3, 266, 400) and masks.dtype == bool
    assert [m["chosen"] for m in record["masks"]].count(True) == 1
    res = run_cli("explain", examples / "cat.jpg", "--model", f"hf:{sam_dir}", "--point", "120,60",
                  "--method", "saliency", "--out", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    shown = np.load(json.loads(res.stdout)["results"][0]["methods"]["saliency"]["map"])
    x = sam.load_image(examples / "cat.jpg").requires_grad_(True)
    chosen = dp.segment_prompts(sam, x.detach(), [dp.Prompt.point(120, 60)])[0][0]
    with sam_of(sam.net).prompted(dp.Prompt.point(120, 60)):
        score = (sam.net(x)[0, chosen.chosen] * chosen.mask.float()).sum()
    grad = clip_outliers(torch.autograd.grad(score, x)[0].abs().amax(1))[0]  # captum's outlier cap, as explain's
    expected = ((grad - grad.min()) / (grad.max() - grad.min())).numpy()
    assert shown.shape == expected.shape and np.corrcoef(shown.ravel(), expected.ravel())[0, 1] > 0.999


@pytest.mark.parametrize("args, message", [
    ((), "needs a prompt"),
    (("--point", "500,10"), "outside"),
    (("--point", "12"), "--point takes X,Y"),
    (("--box", "50,50,10,80"), "X0 < X1"),
])
def test_sam_mistakes_are_one_line(sam_dir, examples, tmp_path, args, message):
    res = run_cli("classify", examples / "cat.jpg", "--model", f"hf:{sam_dir}", *args, "--out", tmp_path)
    assert res.exit_code in (1, 2) and message in res.output and "Traceback" not in res.output


def test_prompts_and_regions_are_refused_on_other_models(examples, tmp_path):
    res = run_cli("classify", examples / "cat.jpg", "--point", "10,10", "--out", tmp_path)
    assert res.exit_code == 2 and "Segment Anything prompts" in res.output
    res = run_cli("fool", examples / "cat.jpg", "--model", BRIGHT, "--nearer", "--out", tmp_path)
    assert res.exit_code == 2 and "--region" in res.output


# ------------------------------------------------------------------------------------------ depth
def test_depth_anything_is_transformers_depth_at_the_photo_size(depth_dir, depth_anything, examples):
    from transformers import DepthAnythingForDepthEstimation

    model = DepthAnythingForDepthEstimation.from_pretrained(depth_dir).eval()
    photo = Image.open(examples / "cat.jpg").convert("RGB")
    inputs = depth_processor()(images=photo, return_tensors="pt")
    with torch.no_grad():
        theirs = depth_processor().post_process_depth_estimation(model(**inputs), target_sizes=[(266, 400)])[0]
    ours = dp.estimate_depth(depth_anything, depth_anything.load_image(examples / "cat.jpg"))[0]
    truth = theirs["predicted_depth"]
    assert ours.depth.shape == (266, 400) and ours.larger_is_nearer  # relative model: inverse depth
    assert (ours.depth - truth).abs().mean() / truth.abs().mean() < 0.01
    assert np.corrcoef(ours.depth.ravel(), truth.ravel())[0, 1] > 0.99


def test_classify_writes_the_depth_of_a_python_net(examples, tmp_path):
    res = run_cli("classify", examples / "cat.jpg", "--model", BRIGHT, "--region", "100,50,200,150",
                  "--out", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)["results"][0]
    expected = brightness_depth_of(read_image(examples / "cat.jpg"))[0]
    assert np.allclose(np.load(record["depth_file"]), expected.numpy(), rtol=1e-4)
    assert Image.open(record["output"]).size == (400, 266)  # the colour map, at the photo's size
    assert record["larger_is_nearer"] is False
    assert math.isclose(record["region_mean"], float(expected[50:150, 100:200].mean()), rel_tol=1e-4)


@pytest.mark.parametrize("method", ["hirescam", "saliency"])
def test_explain_region_lands_on_the_region(method, examples, tmp_path):
    """BrightnessDepth's region depth depends on the region and a 2-pixel rim only: the map must too."""
    res = run_cli("explain", examples / "cat.jpg", "--model", BRIGHT, "--region", "100,50,200,150",
                  "--method", method, "--out", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    heat = np.load(json.loads(res.stdout)["results"][0]["methods"][method]["map"])
    assert heat.shape == (266, 400)
    inside = heat[48:152, 98:202].sum()
    assert inside / heat.sum() > 0.99
    assert heat[50:150, 100:200].mean() > 10 * max(heat[:40].mean(), 1e-9)


def test_explain_depth_anything_uses_its_fusion_layer(depth_dir, examples, tmp_path):
    res = run_cli("explain", examples / "cat.jpg", "--model", f"hf:{depth_dir}", "--region", "10,10,120,100",
                  "--out", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["cam_layer"] == "neck.fusion_stage.layers.3"
    assert np.load(summary["results"][0]["methods"]["hirescam"]["map"]).shape == (266, 400)


@pytest.mark.parametrize("way", ["--nearer", "--farther"])
def test_fool_moves_the_region_by_the_factor_on_the_saved_png(way, examples, tmp_path):
    res = run_cli("fool", examples / "cat.jpg", "--model", BRIGHT, "--region", "100,50,200,150", way,
                  "--factor", "1.5", "--eps", "24/255", "--out", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)["results"][0]
    original = read_image(examples / "cat.jpg")
    saved = read_image(record["output"])
    assert float((saved - original).abs().max()) <= 24 / 255 + 1e-6
    before, after = brightness_depth_of(original)[0], brightness_depth_of(saved)[0]
    region = torch.zeros_like(before, dtype=torch.bool)
    region[50:150, 100:200] = True
    ratio = float(after[region].mean() / before[region].mean())
    moved = 1 / ratio if way == "--nearer" else ratio  # larger = farther for this net
    rest = float(after[~region].mean() / before[~region].mean())
    assert moved >= 1.5 and record["success"] and math.isclose(record["factor"], moved, rel_tol=1e-3)
    assert abs(math.log(rest)) < 0.2 * math.log(moved)  # the rest moves far less than the region


def test_fool_depth_anything_nearer_raises_its_inverse_depth(depth_anything, examples):
    """Depth Anything predicts inverse depth: nearer means a larger prediction in the region."""
    x = dp.read_image(examples / "cat.jpg")
    res = dp.fool_depth(depth_anything, x, (100, 50, 200, 150), nearer=True, factor=1.2, eps=32 / 255, steps=40)
    before = dp.estimate_depth(depth_anything, res.original)[0].depth[50:150, 100:200].mean()
    after = dp.estimate_depth(depth_anything, res.images)[0].depth[50:150, 100:200].mean()
    assert bool(res.success[0]) and float(after / before) >= 1.2
    assert float((res.images - res.original).abs().max()) <= 32 / 255 + 1e-6


def test_depth_robustness_against_clean_and_ground_truth(examples, tmp_path, depth_anything):
    data = tmp_path / "photos"
    data.mkdir()
    maps = tmp_path / "truth"
    maps.mkdir()
    for name in ("cat", "coffee"):
        (data / f"{name}.jpg").write_bytes((examples / f"{name}.jpg").read_bytes())
        depth = brightness_depth_of(read_image(examples / f"{name}.jpg"))[0].numpy()
        np.save(maps / f"{name}.npy", 2 * depth)  # a metric net off by a factor 2: AbsRel exactly 0.5
    common = ("--model", BRIGHT, "--eps", "0", "--eps", "2/255", "--eps", "8/255", "--steps", "3", "--batch-size",
              "1", "--workers", "0", "--json")
    res = run_cli("robustness", data, *common, "--out", tmp_path / "clean")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    means = [summary["abs_rel"][k]["mean"] for k in ("0", "0.007843137", "0.03137255")]
    assert summary["n"] == 2 and summary["reference"] == "clean prediction"
    assert means[0] == 0 and 0 < means[1] < means[2]
    assert (tmp_path / "clean" / "robustness_depth.png").is_file()
    res = run_cli("robustness", data, *common, "--depth-maps", maps, "--out", tmp_path / "truth_run")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["reference"] == "ground truth"
    assert math.isclose(summary["clean_abs_rel"]["mean"], 0.5, abs_tol=1e-4)
    assert math.isclose(summary["abs_rel"]["0"]["mean"], 0.5, abs_tol=1e-4)
    # Depth Anything is relative (inverse depth up to scale and shift): a ground truth that is any such transform
    # of its own prediction scores 0 once aligned
    truth = tmp_path / "relative"
    truth.mkdir()
    for name in ("cat", "coffee"):
        d = dp.estimate_depth(depth_anything, depth_anything.load_image(examples / f"{name}.jpg"))[0].depth
        np.save(truth / f"{name}.npy", (1 / (3 * d + 5)).numpy())
    res = dp.depth_robustness(depth_anything, [str(data / "cat.jpg"), str(data / "coffee.jpg")], eps=[0, 8 / 255],
                              steps=3, depth_maps=truth)
    assert res.clean_abs_rel < 1e-3 and res.abs_rel[0.0] < 1e-3 < res.abs_rel[8 / 255]
