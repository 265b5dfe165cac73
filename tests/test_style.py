"""`deepprobe style` and `dp.style` on real photos: optimized with the bundled Lite0, judged by Lite2 (a network
that took no part in it), so good scores are not an artefact of the optimizing net."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import deepprobe as dp
from deepprobe.cli import app
from deepprobe.errors import DeepprobeError
from deepprobe.io import read_image
from deepprobe.options.style import measure_model_for
from deepprobe.techniques.style import chroma_difference, luminance, measure

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
STYLES = EXAMPLES / "styles"
FAST = dict(size=96, steps=20)  # small and short: the style already takes


@pytest.fixture(scope="module")
def judge():
    return dp.load_model("efficientnet_lite2", device="cpu")


@pytest.fixture(scope="module")
def photos():
    return {name: read_image(path) for name, path in [("cat", EXAMPLES / "cat.jpg"), ("swirls", STYLES / "swirls.jpg"),
                                                      ("ihc", STYLES / "immunohistochemistry.jpg")]}


@pytest.fixture(scope="module")
def swirled(lite0, photos):
    return dp.style(lite0, photos["cat"], photos["swirls"], **FAST)


def test_style_takes_and_content_stays_as_judged_by_another_network(judge, swirled):
    r = swirled
    assert r.images.shape == r.content.shape == (1, 3, 64, 96)  # longest side = size, aspect kept
    assert r.steps == FAST["steps"] and r.stopped == "done" and r.losses[-1] < 0.5 * r.losses[0]
    m = measure(judge, r.images, r.content, r.styles, r.blend)
    # Gram distance to the style: well below the content photo's own
    assert m["gram_distance_result"] < 0.6 * m["gram_distance_content"], m
    # content features: closer to the content than the style image's are
    assert m["content_distance_result"] < 0.7 * m["content_distance_style"], m
    assert m["style_ratio"] == pytest.approx(m["gram_distance_result"] / m["gram_distance_content"])
    assert chroma_difference(r.images, r.content) > 0.03  # the style's colours came in


def test_preserve_colors_keeps_the_contents_chroma(lite0, judge, photos, swirled):
    kept = dp.style(lite0, photos["cat"], photos["swirls"], preserve_colors=True, **FAST)
    assert chroma_difference(kept.images, kept.content) < 0.005 < chroma_difference(swirled.images, swirled.content)
    assert float((luminance(kept.images) - luminance(kept.content)).abs().mean()) > 0.03  # strokes did change
    m = measure(judge, kept.images, kept.content, kept.styles, kept.blend)
    assert m["style_ratio"] < 0.8 and m["content_ratio"] < 0.7, m


def test_several_styles_blend_by_weight(lite0, judge, photos):
    cat, swirls, ihc = photos["cat"], photos["swirls"], photos["ihc"]
    mostly_swirls = dp.style(lite0, cat, [swirls, ihc], style_blend="0.9,0.1", **FAST)
    mostly_ihc = dp.style(lite0, cat, [swirls, ihc], style_blend=[1, 9], **FAST)
    assert mostly_swirls.blend == pytest.approx([0.9, 0.1]) and mostly_ihc.blend == pytest.approx([0.1, 0.9])

    def distance(res, i):  # Gram distance of a result to style image i alone, read by the judge
        return measure(judge, res.images, res.content, [res.styles[i]], [1.0])["gram_distance_result"]
    assert distance(mostly_swirls, 0) < distance(mostly_ihc, 0)
    assert distance(mostly_ihc, 1) < distance(mostly_swirls, 1)
    blended = measure(judge, mostly_ihc.images, mostly_ihc.content, mostly_ihc.styles, mostly_ihc.blend)
    assert blended["style_ratio"] < 0.7, blended
    with pytest.raises(DeepprobeError, match="3 weights for 2"):
        dp.style(lite0, cat, [swirls, ihc], style_blend="1,2,3", **FAST)


def test_adam_from_noise_and_the_model_is_left_untouched(lite0, judge, photos):
    relus = sum(isinstance(m, torch.nn.ReLU6) for m in lite0.net.modules())
    res = dp.style(lite0, photos["cat"], photos["swirls"], init="noise", optimizer="adam", **FAST)
    assert res.losses[-1] < 0.5 * res.losses[0]
    m = measure(judge, res.images, res.content, res.styles, res.blend)
    assert m["style_ratio"] < 0.9 and m["content_ratio"] < 0.8, m
    assert sum(isinstance(m, torch.nn.ReLU6) for m in lite0.net.modules()) == relus > 0  # smoothed on a copy


def test_the_judge_is_another_network():
    assert measure_model_for("efficientnet_lite0", None) == "efficientnet_lite2"
    assert measure_model_for("efficientnet_lite2", None) == "efficientnet_lite0"
    assert measure_model_for("efficientnet_lite0", "efficientnet_lite1") == "efficientnet_lite1"
    assert measure_model_for("efficientnet_lite0", "none") is None


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result, (json.loads(result.stdout) if "--json" in args and result.exit_code == 0 else None)


def test_cli_end_to_end_with_two_styles(tmp_path):
    result, summary = _cli("style", str(EXAMPLES / "cat.jpg"), str(STYLES / "swirls.jpg"),
                           str(STYLES / "immunohistochemistry.jpg"), "--style-blend", "0.7,0.3", "--size", "96",
                           "--steps", "15", "--json", "--out", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    r = summary["results"][0]
    assert Path(r["output"]).name == "cat_style_swirls+immunohistochemistry.png"
    assert r["style_blend"] == pytest.approx([0.7, 0.3]) and r["size"] == [64, 96]
    assert r["measured_by"] == "efficientnet_lite2" and summary["model"] == "efficientnet_lite0"
    assert r["gram_distance_result"] < 0.7 * r["gram_distance_content"]
    assert r["content_distance_result"] < r["content_distance_style"]
    assert summary["style_ratio"] == r["style_ratio"] < 0.7
    from PIL import Image
    with Image.open(r["output"]) as im:
        assert im.size == (96, 64)
    with Image.open(r["panel"]) as im:  # content | style | style | result
        assert im.width > 4 * 160
    sidecar = json.loads(Path(r["output"]).with_suffix(".json").read_text())
    assert sidecar["command"] == "style" and sidecar["result"]["loss_curve"]
    assert sidecar["options"]["style_blend"] == "0.7,0.3"


def test_cli_preserve_colors_reports_the_chroma_kept(tmp_path):
    result, summary = _cli("style", str(EXAMPLES / "coffee.jpg"), str(STYLES / "swirls.jpg"), "--preserve-colors",
                           "--optimizer", "adam", "--size", "64", "--steps", "10", "--measure-model", "none",
                           "--json", "--out", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    r = summary["results"][0]
    assert r["preserve_colors"] is True and r["content_chroma_difference"] < 0.005
    assert "style_ratio" not in r  # --measure-model none skips the judge


@pytest.mark.parametrize("args, words", [
    (["--init", "photo"], "--init"),
    (["--optimizer", "sgd"], "--optimizer"),
    (["--style-blend", "1,2"], "--style-blend"),
    (["--style-blend", "a,b"], "--style-blend"),
    (["--size", "8"], "--size"),
    (["--style-layer", "blocks.9"], "unknown layer"),
])
def test_bad_options_are_one_line_errors(tmp_path, args, words):
    result = CliRunner().invoke(app, ["style", str(EXAMPLES / "cat.jpg"), str(STYLES / "swirls.jpg"), *args,
                                      "--out", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0] and words in lines[0], result.output
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())


def test_a_missing_style_image_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["style", str(EXAMPLES / "cat.jpg"), str(tmp_path / "nope.jpg"),
                                      "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 2 and "nope.jpg" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("recipe", ["style-soft", "style-strong"])
def test_recipes_run(lite0, tmp_path, recipe):
    """A recipe's options reach the optimization: the saved PNG is what dp.style paints with the options the recipe
    file holds (read here), and not what it paints with the defaults."""
    import tomllib

    from deepprobe.io import quantize

    options = tomllib.loads((EXAMPLES.parent / "recipes" / f"{recipe}.toml").read_text())["options"]
    content, style = EXAMPLES / "rocket.jpg", STYLES / "immunohistochemistry.jpg"
    result, summary = _cli("style", str(content), str(style), "--recipe", recipe, "--steps", "3", "--size", "64",
                           "--measure-model", "none", "--json", "--out", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert summary["options"]["style_weight"] == options["style_weight"] and summary["results"][0]["steps"] == 3
    saved = read_image(summary["results"][0]["output"])
    painted = {name: dp.style(lite0, read_image(content), read_image(style), size=64, **{**kw, "steps": 3}).images
               for name, kw in (("recipe", options), ("defaults", {}))}
    assert saved.shape == painted["recipe"].shape
    differ = {name: float((saved != quantize(images)).float().mean()) for name, images in painted.items()}
    assert differ["recipe"] < 1e-3 and differ["defaults"] > 0.02, differ  # (share of 8-bit values that differ)
