"""Results that show themselves: every result of the Python API returns a valid PNG (and the numbers' results an
HTML table) from its Jupyter repr, without a notebook server; `.save` never overwrites; `dp.explain`'s maps stay
the plain tensor the API promises."""
from __future__ import annotations

import copy
import dataclasses
import io
import json
import pickle
import subprocess
import sys

import pytest
import torch
from PIL import Image

import deepprobe as dp
from deepprobe.errors import DeepprobeError


def png(obj) -> Image.Image:
    """The object's Jupyter PNG, decoded (fails on anything that is not a valid PNG)."""
    data = obj._repr_png_()
    assert isinstance(data, bytes) and data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture(scope="module")
def two(lite0, cat, coffee):
    return torch.cat([cat, coffee])


def test_explain_maps_show_one_captioned_overlay_per_image_and_stay_a_plain_tensor(lite0, two, cat):
    maps = dp.explain(lite0, two, "gradcam")
    one = png(dp.explain(lite0, cat, "gradcam"))
    both = png(maps)
    assert both.width > 1.8 * one.width and both.height == one.height  # a tile per image, side by side
    assert one.width >= 224 and one.height > 224  # the map at input size and its caption under it
    # an overlay, not the photo: the figure's tile differs from the photo where the map is hot
    tile = torch.tensor(list(one.convert("RGB").crop((6, 30, 230, 254)).tobytes())).view(224, 224, 3) / 255
    assert (tile.permute(2, 0, 1) - cat[0]).abs().mean() > 0.05
    # the tensor contract: (N,H,W) in [0,1]; every operation gives a plain tensor, pickles store a plain tensor
    assert isinstance(maps, torch.Tensor) and maps.shape == (2, 224, 224) and 0 <= float(maps.min())
    for derived in (maps[0], maps > 0.5, maps.detach(), maps * 2, torch.stack([maps, maps])):
        assert type(derived) is torch.Tensor
    buffer = io.BytesIO()
    torch.save(maps, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert type(loaded) is torch.Tensor and torch.equal(loaded, maps.as_subclass(torch.Tensor))
    assert type(pickle.loads(pickle.dumps(maps))) is torch.Tensor
    copied = copy.deepcopy(maps)
    assert torch.equal(copied, maps) and copied.data_ptr() != maps.data_ptr()
    # a plain tensor built from the maps has nothing to draw
    assert getattr(maps.clone(), "_repr_png_", None) is None


def test_save_writes_the_png_and_never_overwrites(lite0, cat, tmp_path, monkeypatch):
    maps = dp.explain(lite0, cat, "gradcam")
    first = maps.save(tmp_path / "map.png")
    second = maps.save(tmp_path / "map.png")
    assert (first.name, second.name) == ("map.png", "map-1.png")
    assert Image.open(first).size == png(maps).size
    assert maps.save(tmp_path / "map.png", force=True) == first
    with pytest.raises(DeepprobeError, match="PNG"):
        maps.save(tmp_path / "map.jpg")
    shown = []
    monkeypatch.setattr(Image.Image, "show", lambda self, *a, **k: shown.append(self.size))
    maps.show()  # outside IPython: the system's image viewer
    assert shown == [png(maps).size]


def test_attack_shows_the_panel_the_cli_writes(lite0, cat, examples, tmp_path):
    from deepprobe.io import quantize

    # the CLI attacks the photo as an 8-bit file holds it, with seed 0: the same attack as this call
    res = dp.attack(lite0, quantize(cat), target="ostrich", steps=5, confidence=0)
    figure = png(res)
    out = tmp_path / "out"
    cli = subprocess.run([sys.executable, "-m", "deepprobe", "fool", str(examples / "cat.jpg"), "--target", "ostrich",
                          "--steps", "5", "--confidence", "0", "--out", str(out), "--quiet"],
                         capture_output=True, text=True, timeout=180)
    assert cli.returncode == 0, cli.stderr
    written = Image.open(out / "cat_fool_ostrich_panel.png").convert("RGB")
    assert written.size == figure.size  # original | perturbation | adversarial, captions under each
    # the tiles and captions are the same pixels (only the title names the file instead of "image 0")
    below_title = (0, 24, figure.width, figure.height)
    assert written.crop(below_title).tobytes() == figure.convert("RGB").crop(below_title).tobytes()
    record = json.loads((out / "cat_fool_ostrich.json").read_text())["result"]
    assert record["final_class"] == res.records(lite0)[0]["final_class"] == "ostrich"


def test_images_from_noise_show_their_grid(lite0):
    res = dp.fool_from_noise(lite0, ["king penguin", "starfish"], "gradient", steps=3)
    assert png(res).width > 2 * 224  # one captioned tile per target


def test_synthesis_results_show_their_grids(lite0, cat):
    small = torch.nn.functional.interpolate(cat, size=(64, 64), mode="area")
    inv = dp.invert(lite0, small, ["conv_stem", "blocks.1"], steps=3, size=64)
    assert png(inv).width > 3 * 128  # original | two layers, enlarged to 128 px tiles
    mx = dp.maximize(lite0, ["ostrich", "goldfish"], size=64, steps=2)
    assert png(mx).width > 2 * 128
    dr = dp.dream(lite0, small, "blocks.2", octaves=1, steps=2)
    assert png(dr).width >= 2 * 64
    st = dp.style(lite0, small, small.flip(-1), size=64, steps=2, optimizer="adam")
    assert png(st).width > 3 * 160  # content | style | result


@pytest.mark.slow
def test_evaluate_shows_its_table_and_plots(lite0, two, examples):
    small = torch.nn.functional.interpolate(two, size=(112, 112), mode="area")  # the bundled nets take any size
    ev = dp.evaluate(lite0, small, ["gradcam", "saliency"], metrics=["deletion"], steps=4)
    page = ev._repr_html_()
    assert page.count("<tr>") == 1 + 4  # header, two methods and the two reference maps
    assert "gradcam" in page and "deletion ↓" in page and "data:image/png;base64," in page
    assert f"{ev.summary()['metrics']['gradcam']['deletion']['mean']:.3g}" in page
    assert png(ev).height > 300  # the curves and the table, one under the other
    data = dp.evaluate(lite0, str(examples), ["gradcam"], metrics=["deletion"], steps=4, limit=1)  # a DATA folder
    assert "1 image(s)" in data._repr_html_() and png(data).height > 300


def test_robustness_shows_its_table_and_plot(lite0, two):
    rb = dp.robustness(lite0, two, attacks="apgd-ce", eps=[0, 1 / 255], steps=2)
    page = rb._repr_html_()
    assert page.count("<tr>") == 1 + 2 and "after apgd-ce" in page and "data:image/png;base64," in page
    assert png(rb).size[0] > 300


def test_detector_and_segmenter_results_show_boxes_maps_and_panels(tiny_tasks):
    from tests.tiny_tasks import two_shapes

    det = dp.load_model("python:tests.tiny_tasks:detector", weights=str(tiny_tasks[0]), device="cpu")
    seg = dp.load_model("python:tests.tiny_tasks:segmenter", weights=str(tiny_tasks[1]), device="cpu")
    scene = two_shapes()[0][None]
    found = dp.classify(det, scene, min_score=0.5)[0]
    assert len(found) == 2 and png(found).width >= 224  # the 64 px scene enlarged so the tags stay readable
    maps = dp.explain(det, scene, "hirescam")[0]
    assert png(maps).width > 2 * 224  # one tile per box
    gone = dp.fool_detector(det, scene, vanish="square", alpha=4 / 255, steps=20)
    assert png(gone).width > 3 * 224
    assert png(dp.classify(seg, scene)[0]).height > 64
    assert png(dp.explain(seg, scene, "gradcam", target="disk")).width >= 224
    turned = dp.fool_segmenter(seg, scene, target="disk", source="square", alpha=4 / 255, steps=5)
    assert png(turned).width > 3 * 224


def test_a_result_without_its_model_shows_as_text(lite0, cat):
    res = dp.attack(lite0, cat, method="fgsm")
    restored = pickle.loads(pickle.dumps(res))  # the model is not pickled with the numbers
    assert torch.equal(restored.images, res.images) and len(pickle.dumps(res)) < 5_000_000
    assert restored._repr_png_() is None
    with pytest.raises(DeepprobeError, match="lacks bundle"):
        restored.figure()


# ------------------------------------------------------------------------------------------ foundation models
BRIGHT = "python:tiny_foundation:brightness_depth"
BELOW_TITLE = 24  # render.grid's title band: the CLI names the file there, the API "image 0"
CAT = 400  # cat.jpg is 400 x 266: the panels' tiles are its width (224 to 400 px)


def cli_png(*args) -> Image.Image:
    """Run the CLI in process; the one PNG it names as `panel` (or `output`) in its JSON record, decoded."""
    from typer.testing import CliRunner

    from deepprobe.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args] + ["--json"])
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)["results"][0]
    return Image.open(record.get("panel") or record["output"]).convert("RGB")


def same_pixels(a: Image.Image, b: Image.Image, box) -> bool:
    return a.size == b.size and a.convert("RGB").crop(box).tobytes() == b.convert("RGB").crop(box).tobytes()


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    from tiny_foundation import save_sam

    folder = save_sam(tmp_path_factory.mktemp("tiny_sam"))
    return folder, dp.load_model(f"hf:{folder}", device="cpu")


@pytest.fixture(scope="module")
def bright():
    return dp.load_model(BRIGHT, device="cpu")


def test_sam_masks_show_the_panel_classify_writes(tiny_sam, examples, tmp_path, attempts):
    folder, sam = tiny_sam
    x = sam.load_image(examples / "cat.jpg")
    point, box = dp.segment_prompts(sam, x, [dp.Prompt.point(120, 60), dp.Prompt.of_box(40, 30, 260, 200)])[0]
    figure = png(point)
    written = cli_png("classify", examples / "cat.jpg", "--model", f"hf:{folder}", "--point", "120,60",
                      "--out", tmp_path)
    assert not attempts
    # input | three masks, each captioned with its IoU score: the file classify writes, but for the title
    assert figure.width == 4 * CAT + 5 * 6 and same_pixels(figure, written, (0, BELOW_TITLE, *figure.size))
    assert png(box).size == figure.size and png(box).tobytes() != figure.tobytes()  # the box prompt's own masks
    copied = pickle.loads(pickle.dumps(point))
    assert torch.equal(copied.masks, point.masks) and copied._repr_png_() is None  # no photo: text


def test_depth_maps_show_photo_and_depth_as_classify_writes(bright, examples, tmp_path):
    from deepprobe.models.depth import DepthMap

    x = bright.load_image(examples / "cat.jpg")
    found = dp.estimate_depth(bright, x, region=(100, 50, 200, 150))[0]
    figure = png(found)
    written = cli_png("classify", examples / "cat.jpg", "--model", BRIGHT, "--region", "100,50,200,150",
                      "--out", tmp_path)
    # photo | depth: the depth tile and its caption (the region's mean) are the CLI's pixels; the photo's caption
    # names the file there
    assert figure.width == 2 * CAT + 3 * 6 and same_pixels(figure, written, (6 + CAT + 3, BELOW_TITLE, *figure.size))
    plain = png(dp.classify(bright, x)[0])  # no region: no frame, no region mean
    assert plain.size[0] == figure.size[0] and plain.tobytes() != figure.tobytes()
    assert DepthMap(found.depth, found.larger_is_nearer)._repr_png_() is None


@pytest.mark.slow
def test_fool_depth_and_fool_prompt_show_the_panels_fool_writes(bright, tiny_sam, examples, tmp_path):
    from deepprobe.io import quantize

    x = quantize(bright.load_image(examples / "cat.jpg"))  # the CLI attacks the photo as its 8-bit file holds it
    moved = dp.fool_depth(bright, x, (100, 50, 200, 150), nearer=True, factor=1.5, eps=24 / 255, steps=5,
                        rounds=0)
    figure = png(moved)
    written = cli_png("fool", examples / "cat.jpg", "--model", BRIGHT, "--region", "100,50,200,150", "--nearer",
                      "--factor", "1.5", "--eps", "24/255", "--steps", "5", "--rounds", "0", "--out", tmp_path / "depth")
    # original | perturbation | adversarial | depth before | depth after, one colour scale
    assert figure.width == 5 * CAT + 6 * 6 and same_pixels(figure, written, (0, BELOW_TITLE, *figure.size))
    _, sam = tiny_sam
    gone = dp.fool_prompt(sam, x, dp.Prompt.point(120, 60), steps=2, rounds=0)
    shown = png(gone)  # clean mask | perturbation | adversarial's mask
    assert shown.width == 3 * CAT + 4 * 6
    # its first tile is the chosen clean mask, drawn as classify draws that mask
    masks = dp.segment_prompts(sam, x, [dp.Prompt.point(120, 60)])[0][0]
    left = 6 + (1 + masks.chosen) * (CAT + 6)
    chosen = png(masks).crop((left, 30, left + CAT, 30 + 266))
    assert shown.crop((6, 30, 6 + CAT, 30 + 266)).tobytes() == chosen.tobytes()


def test_attention_heads_show_dinos_figure_as_explain_writes_it(examples, tmp_path):
    from typer.testing import CliRunner

    from deepprobe.cli import app

    from tiny_embedders import HEADS

    spec = "python:tiny_embedders:vit"  # a tiny random ViT embedder
    embedder = dp.load_model(spec, device="cpu")
    cat = embedder.load_image(examples / "cat.jpg")
    heads = dp.attention_heads(embedder, torch.cat([cat, cat.flip(-1)]))
    assert heads.shape == (2, HEADS, *cat.shape[-2:]) and type(heads[0]) is torch.Tensor  # a plain tensor when indexed
    figure = png(heads)
    res = CliRunner().invoke(app, ["explain", str(examples / "cat.jpg"), "--model", spec, "--method", "attention",
                                   "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    (record,) = [r for r in json.loads(res.stdout)["results"] if "attention_heads" in r]
    written = Image.open(record["attention_heads"]).convert("RGB")
    # per image: the photo | one tile per head, under a title naming the image; the CLI's file for the first image
    top = png(dp.attention_heads(embedder, cat))
    assert top.size == written.size and same_pixels(top, written, (0, BELOW_TITLE, *top.size))
    assert figure.width == top.width and figure.height == 2 * top.height + 8
    assert not same_pixels(figure.crop((0, top.height + 8, *figure.size)), top, (0, 0, *top.size))  # its own maps
    assert pickle.loads(pickle.dumps(heads)).__class__ is torch.Tensor  # torch.save stores the numbers only


def test_feature_attack_shows_the_panel_fool_writes(examples, tmp_path):
    from deepprobe.io import quantize

    spec = "python:tiny_embedders:vit"  # a tiny random ViT: cheap, and a cosine moves on it as on any embedder
    embedder = dp.load_model(spec, device="cpu")
    cat, coffee = (embedder.load_image(examples / f"{n}.jpg") for n in ("cat", "coffee"))
    res = dp.feature_attack(embedder, quantize(cat), coffee, steps=3)
    figure = png(res)
    written = cli_png("fool", examples / "cat.jpg", "--model", spec, "--reference", examples / "coffee.jpg",
                      "--steps", "3", "--out", tmp_path / "out")
    # original | perturbation | saved PNG with the cosines to the reference
    assert figure.width == 3 * 224 + 4 * 6 and same_pixels(figure, written, (0, BELOW_TITLE, *figure.size))
    twice = {k: torch.cat([getattr(res, k)] * 2) for k in ("images", "original", "cosine_before", "cosine_after",
                                                           "cosine_to_original", "linf", "l2")}
    away = dataclasses.replace(res, away=True, **twice)
    two = png(away)  # one panel per image, stacked; pushed away: the cosine to the original, no verdict
    assert two.width == figure.width and two.height == 2 * figure.height + 8
    assert not same_pixels(two.crop((0, 0, *figure.size)), figure, (0, 0, *figure.size))


# ------------------------------------------------------------------------------------------ age, patch, depth data
def test_depth_robustness_shows_the_table_and_the_plot_the_cli_writes(bright, examples, tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    for name in ("cat", "coffee"):
        (data / f"{name}.jpg").write_bytes((examples / f"{name}.jpg").read_bytes())
    res = dp.depth_robustness(bright, [str(data / "cat.jpg"), str(data / "coffee.jpg")], eps=[0, 2 / 255], steps=2)
    page = res._repr_html_()
    assert page.count("<tr>") == 1 + 2 and "2/255" in page and "AbsRel" in page and "data:image/png;base64," in page
    assert f"{res.abs_rel[2 / 255]:.4g}" in page
    from typer.testing import CliRunner

    from deepprobe.cli import app

    cli = CliRunner().invoke(app, ["robustness", str(data), "--model", BRIGHT, "--eps", "0", "--eps", "2/255",
                                   "--steps", "2", "--batch-size", "1", "--workers", "0", "--out", str(tmp_path / "o")])
    assert cli.exit_code == 0, cli.output
    written = Image.open(tmp_path / "o" / "robustness_depth.png")
    assert same_pixels(png(res), written, (0, 0, *written.size))  # the same plot, title included
    assert pickle.loads(pickle.dumps(res))._repr_png_() is None  # no model title: the table only
    assert "<table" in pickle.loads(pickle.dumps(res))._repr_html_()


def test_age_shows_the_panel_age_writes(examples, tmp_path):
    from deepprobe.io import read_image

    photo = read_image(examples / "astronaut.jpg")
    res = dp.age(photo, [20, 60], steps=2, rounds=1, source="astronaut.jpg")
    figure = png(res)
    cli = subprocess.run([sys.executable, "-m", "deepprobe", "age", str(examples / "astronaut.jpg"), "--steps-grid",
                          "20,60", "--steps", "2", "--rounds", "1", "--out", str(tmp_path), "--quiet"],
                         capture_output=True, text=True, timeout=180)
    assert cli.returncode == 0, cli.stderr
    written = Image.open(tmp_path / "astronaut_age_grid_panel.png")
    # the face | each edit with the age read on it: the CLI reads the saved files, the API the same 8-bit photos
    assert figure.width == 3 * 256 + 4 * 6 and same_pixels(figure, written, (0, 0, *figure.size))
    assert pickle.loads(pickle.dumps(res))._repr_png_() is None


def test_patch_results_show_the_preview_and_the_applied_grid(lite0, two, examples, tmp_path):
    res = dp.train_patch(lite0, two, "toaster", steps=2, batch_size=2)
    preview = png(res)
    cli = subprocess.run([sys.executable, "-m", "deepprobe", "patch", "train", str(examples / "cat.jpg"),
                          str(examples / "coffee.jpg"), "--target", "toaster", "--steps", "2", "--batch-size", "2",
                          "--out", str(tmp_path), "--quiet"], capture_output=True, text=True, timeout=180)
    assert cli.returncode == 0, cli.stderr
    written = Image.open(tmp_path / "patch_toaster_preview.png")
    assert preview.width == 3 * 200 + 4 * 6 and same_pixels(preview, written, (0, 0, *preview.size))  # patch | 2
    applied = dp.apply_patch(lite0, torch.cat([two, two, two]), res.patch, "toaster")
    grid = png(applied)
    assert grid.width == 4 * 200 + 5 * 6 and grid.height > 2 * 200  # six photos, four to a row
    assert pickle.loads(pickle.dumps(applied))._repr_png_() is None
