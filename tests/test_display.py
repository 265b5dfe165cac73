"""Results that show themselves: every result of the Python API returns a valid PNG (and the numbers' results an
HTML table) from its Jupyter repr, without a notebook server; `.save` never overwrites; `dp.explain`'s maps stay
the plain tensor the API promises."""
from __future__ import annotations

import copy
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
