"""`deepprobe dream` and `dp.dream` on real photos with the bundled model: the layer's activation norm grows,
the photo's layout survives, guided dreams raise their class, tiles bound memory and match the untiled dream."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import deepprobe as dp
from deepprobe.cli import app
from deepprobe.io import read_image
from deepprobe.techniques.dream import activation_norms, layout_similarity, target_logits, tile_slices

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAST = dict(octaves=2, steps=5)  # small photos, few steps: the effect is already clear


def _photo(name: str, short: int = 96) -> torch.Tensor:
    """A real photo at a small size (aspect kept), as the dream sees it: its own pixels, no crop."""
    x = read_image(EXAMPLES / name)
    h, w = x.shape[-2:]
    k = short / min(h, w)
    return F.interpolate(x, size=(round(h * k), round(w * k)), mode="area")


@pytest.fixture(scope="module")
def cat_small():
    return _photo("cat.jpg")


@pytest.fixture(scope="module")
def dreamed(lite0, cat_small):
    return dp.dream(lite0, cat_small, ["blocks.4"], seed=0, **FAST)


def test_dream_grows_the_layer_norm_and_keeps_the_layout(lite0, cat_small, dreamed):
    assert dreamed.images.shape == cat_small.shape  # the photo's own size
    assert float(dreamed.images.min()) >= 0 and float(dreamed.images.max()) <= 1
    before = float(activation_norms(lite0, cat_small, "blocks.4")["blocks.4"][0])
    after = float(activation_norms(lite0, dreamed.images, "blocks.4")["blocks.4"][0])
    assert after > 1.2 * before, (before, after)
    assert dreamed.losses[-1] < dreamed.losses[0]  # the objective is the negative norm: it went down
    kept = float(layout_similarity(cat_small, dreamed.images)[0])
    other = _photo("coffee.jpg")[..., : cat_small.shape[-2], : cat_small.shape[-1]]
    unrelated = float(layout_similarity(cat_small, other)[0])
    assert kept > 0.85 and kept > unrelated + 0.4, (kept, unrelated)
    assert float((dreamed.images - cat_small).abs().mean()) > 0.02  # it did change the picture


def test_several_layers_and_strength(lite0, cat_small, dreamed):
    both = dp.dream(lite0, cat_small, ["blocks.3", "blocks.4"], seed=0, **FAST)
    norms0 = activation_norms(lite0, cat_small, ["blocks.3", "blocks.4"])
    norms1 = activation_norms(lite0, both.images, ["blocks.3", "blocks.4"])
    assert all(float(norms1[k][0]) > float(norms0[k][0]) for k in norms0)
    half = dp.dream(lite0, cat_small, ["blocks.4"], seed=0, strength=0.5, **FAST)
    full_change = (dreamed.images - cat_small).abs().mean()
    assert abs(float((half.images - cat_small).abs().mean() / full_change) - 0.5) < 0.1
    none = dp.dream(lite0, cat_small, ["blocks.4"], seed=0, strength=0.0, **FAST)
    assert torch.allclose(none.images, cat_small, atol=1e-6)


def test_guided_dream_raises_the_target_logit(lite0, cat_small):
    goldfish = lite0.class_index("goldfish")
    res = dp.dream(lite0, cat_small, target="goldfish", seed=0, **FAST)
    before = float(target_logits(lite0, cat_small, goldfish)[0])
    after = float(target_logits(lite0, res.images, goldfish)[0])
    assert after > before + 5, (before, after)
    p = lite0.predict(lite0.prepare(res.images))[0, goldfish]
    assert float(p) > float(lite0.predict(lite0.prepare(cat_small))[0, goldfish]) * 10
    assert float(layout_similarity(cat_small, res.images)[0]) > 0.8


def test_tiles_bound_the_model_input_and_match_the_untiled_dream(lite0):
    photo = _photo("astronaut.jpg", short=150)  # 150x150 processed as tiles of 64 (+ a remainder)
    assert [s.stop - s.start for s in tile_slices(150, 64)] == [64, 86]  # 22 left over joins the last tile
    assert [s.stop - s.start for s in tile_slices(160, 64)] == [64, 64, 32]
    assert [s.stop - s.start for s in tile_slices(200, 64)] == [64, 64, 72]
    sizes = []
    hook = lite0.net.register_forward_pre_hook(lambda _m, inp: sizes.append(tuple(inp[0].shape[-2:])))
    try:
        tiled = dp.dream(lite0, photo, "blocks.3", tile=64, seed=0, octaves=2, steps=8)
    finally:
        hook.remove()
    assert max(max(s) for s in sizes) <= 96  # never the whole photo at once
    whole = dp.dream(lite0, photo, "blocks.3", tile=0, seed=0, octaves=2, steps=8)
    assert tiled.images.shape == whole.images.shape == photo.shape
    n0 = float(activation_norms(lite0, photo, "blocks.3", tile=0)["blocks.3"][0])
    grow_tiled = float(activation_norms(lite0, tiled.images, "blocks.3", tile=0)["blocks.3"][0]) / n0
    grow_whole = float(activation_norms(lite0, whole.images, "blocks.3", tile=0)["blocks.3"][0]) / n0
    assert grow_tiled > 1.12 and abs(grow_tiled - grow_whole) < 0.25 * (grow_whole - 1), (grow_tiled, grow_whole)
    assert float(layout_similarity(tiled.images, whole.images)[0]) > 0.9
    change_t, change_w = tiled.images - photo, whole.images - photo
    assert abs(float(change_t.abs().mean() / change_w.abs().mean()) - 1) < 0.25


def test_ctrl_c_keeps_the_dream_so_far_at_full_size(lite0, cat_small):
    def stop(step, total, loss, fwd):
        if step == 3:
            raise KeyboardInterrupt
    res = dp.dream(lite0, cat_small, "blocks.4", seed=0, callback=stop, **FAST)
    assert res.stopped == "interrupted" and res.steps == 3
    assert res.images.shape == cat_small.shape and not torch.equal(res.images, cat_small)


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result, (json.loads(result.stdout) if "--json" in args and result.exit_code == 0 else None)


def test_cli_end_to_end(tmp_path):
    result, summary = _cli("dream", str(EXAMPLES / "cat.jpg"), "--steps", "3", "--octaves", "2", "--json",
                           "--out", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    r = summary["results"][0]
    from PIL import Image
    with Image.open(r["output"]) as im, Image.open(EXAMPLES / "cat.jpg") as photo:
        assert im.size == photo.size  # the photo's own size
    with Image.open(r["panel"]) as im:
        assert im.width > 2 * 266  # input | dream, captioned
    assert r["activation_norm_after"]["blocks.4"] > r["activation_norm_before"]["blocks.4"]
    assert r["norm_growth"]["blocks.4"] > 1 and r["layout_correlation"] > 0.9
    assert r["steps"] == 6 and r["stopped"] == "done" and r["tiles"] == 1
    sidecar = json.loads(Path(r["output"]).with_suffix(".json").read_text())
    assert sidecar["command"] == "dream" and len(sidecar["result"]["loss_curve"]) == 6
    assert {Path(p).name for p in summary["outputs"]} >= {"cat_dream.png", "cat_dream_panel.png", "cat_dream.json"}

    guided, summary = _cli("dream", str(EXAMPLES / "coffee.jpg"), "--target", "goldfish", "--steps", "3",
                           "--octaves", "2", "--tile", "128", "--json", "--out", str(tmp_path), "--device", "cpu")
    assert guided.exit_code == 0, guided.output
    g = summary["results"][0]
    assert Path(g["output"]).name == "coffee_dream_goldfish.png" and g["tiles"] == 6
    assert g["target_logit_after"] > g["target_logit_before"]


@pytest.mark.parametrize("args, words", [
    (["--octave-scale", "0.9"], "--octave-scale"),
    (["--layer", "blocks.44"], "unknown layer"),
    (["--target", "goldfsh"], "goldfish"),
    (["--tile", "10"], "--tile"),
    (["--lr", "abc"], "lr"),
])
def test_bad_options_are_one_line_errors(tmp_path, args, words):
    result = CliRunner().invoke(app, ["dream", str(EXAMPLES / "cat.jpg"), *args, "--out", str(tmp_path),
                                      "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0] and words in lines[0], result.output
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())


def test_recipe_sets_options_and_a_sidecar_reruns_pixel_for_pixel(tmp_path):
    import numpy as np
    from PIL import Image

    result, summary = _cli("dream", str(EXAMPLES / "rocket.jpg"), "--recipe", "dream-gentle", "--steps", "2",
                           "--seed", "5", "--json", "--out", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    r = summary["results"][0]
    assert r["layers"] == ["blocks.3"] and len(r["octave_sizes"]) == 3 and r["steps"] == 6  # recipe; typed --steps wins
    assert summary["options"]["strength"] == 0.7 and summary["options"]["smooth"] == 1.5
    first = Path(r["output"])
    rerun = CliRunner().invoke(app, ["rerun", str(first.with_suffix(".json")), "--quiet"])
    assert rerun.exit_code == 0, rerun.output
    second = first.with_name("rocket_dream-1.png")
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))
