"""`deepprobe fool` and `dp.attack` on real photos with the bundled model; success is checked on saved PNGs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import deepprobe as dp
from deepprobe.cli import app
from deepprobe.io import quantize

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LINF_8 = 8 / 255 + 1e-6


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result, (json.loads(result.stdout) if "--json" in args and result.exit_code in (0, 130) else None)


@pytest.fixture(scope="session")
def fooled(tmp_path_factory):
    """One CLI run: the cat made into an ostrich and a toaster, the espresso into an ostrich (default pgd,
    L-inf 8/255, default confidence 0.9: at confidence 0 the espresso stops at ostrich ~26%)."""
    out = tmp_path_factory.mktemp("fool")
    result, summary = _cli("fool", str(EXAMPLES / "cat.jpg"), "--target", "ostrich", "--target", "toaster",
                           "--out", str(out), "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    more, coffee = _cli("fool", str(EXAMPLES / "coffee.jpg"), "--target", "ostrich", "--out", str(out), "--json",
                        "--device", "cpu")
    assert more.exit_code == 0, more.output
    summary["results"] += coffee["results"]
    summary["outputs"] += coffee["outputs"]
    return out, summary


def test_targeted_fool_succeeds_on_the_saved_png(fooled):
    _, summary = fooled
    assert [(Path(r["input"]).stem, r["target"]) for r in summary["results"]] == [
        ("cat", "ostrich"), ("cat", "toaster"), ("coffee", "ostrich")]
    fresh = dp.load_model("efficientnet_lite0", device="cpu")  # independent of the run's model
    for r in summary["results"]:
        stem = Path(r["input"]).stem
        saved = Path(r["output"])
        assert saved.name == f"{stem}_fool_{r['target']}.png" and saved.exists()
        x = fresh.load_image(saved)
        assert tuple(x.shape[-2:]) == fresh.input_size  # saved at the input size: re-enters unchanged
        probs = fresh.predict(x)[0]
        assert fresh.class_name(int(probs.argmax())) == r["target"] == r["final_class"]
        assert r["success"] is True and r["checked_on"] == "saved PNG"
        assert abs(float(probs.max()) - r["final_probability"]) < 1e-4
        # The default confidence, reached on the file as written and read back by a fresh model.
        p_target = float(probs[fresh.class_index(r["target"])])
        assert p_target >= 0.9 and r["confidence"] == 0.9 and r["confidence_reached"] is True
        assert r["target_probability"] == pytest.approx(p_target, abs=1e-4)
        # The perturbation, measured on the files: within the L-inf budget of 8/255.
        original = quantize(fresh.load_image(EXAMPLES / f"{stem}.jpg"))
        assert float((x - original).abs().max()) <= LINF_8
        assert r["linf"] <= LINF_8 and r["linf_255"] <= 8.0001
        assert r["original_class"] != r["target"]


def test_a_budget_too_small_for_the_confidence_is_reported(tmp_path):
    result, summary = _cli("fool", str(EXAMPLES / "coffee.jpg"), "--target", "ostrich", "--eps", "1/255",
                           "--steps", "3", "--rounds", "0", "--out", str(tmp_path), "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    r = summary["results"][0]
    fresh = dp.load_model("efficientnet_lite0", device="cpu")
    p_target = float(fresh.predict(fresh.load_image(r["output"]))[0, fresh.class_index("ostrich")])
    assert p_target < 0.9 and r["confidence_reached"] is False  # not claimed
    assert r["target_probability"] == pytest.approx(p_target, abs=1e-4)
    assert "did not reach the asked confidence 0.9" in result.stderr and "coffee.jpg" in result.stderr
    assert json.loads((tmp_path / "coffee_fool_ostrich.json").read_text())["result"]["confidence_reached"] is False


def test_confidence_zero_keeps_the_smallest_margin(lite0, coffee):
    x = quantize(coffee)
    target = lite0.class_index("ostrich")
    plain = dp.attack(lite0, x, "ostrich", confidence=0, seed=0)
    sure = dp.attack(lite0, x, "ostrich", seed=0)  # the API default is the CLI's: 0.9
    for res in (plain, sure):
        assert res.success.tolist() == [True] and float(res.linf[0]) <= LINF_8
        assert float(res.target_prob[0]) == pytest.approx(float(lite0.predict(res.images)[0, target]), abs=1e-5)
    # Confidence 0 stops as soon as the target clears the logit margin, well short of 90% on this photo;
    # the default goes on (more steps, same budget) until the 8-bit image gives at least 90%.
    assert float(plain.target_prob[0]) < 0.9 and plain.confidence_reached.tolist() == [True]
    assert float(sure.target_prob[0]) >= 0.9 and sure.confidence_reached.tolist() == [True]
    assert int(plain.steps[0]) < int(sure.steps[0]) <= 40
    assert plain.records(lite0)[0]["confidence"] == 0 and sure.records(lite0)[0]["confidence"] == 0.9


def test_fgsm_takes_its_one_step_and_reports_the_confidence(lite0, coffee):
    res = dp.attack(lite0, quantize(coffee), "ostrich", method="fgsm")
    row = res.records(lite0)[0]
    assert res.steps.tolist() == [1] and row["confidence"] == 0.9
    assert row["confidence_reached"] is (row["success"] and row["target_probability"] >= 0.9)


def test_confidence_out_of_range_is_a_user_error(lite0, coffee):
    with pytest.raises(dp.DeepprobeError, match="confidence"):
        dp.attack(lite0, coffee, "ostrich", confidence=1.0)


def test_json_fields_and_outputs(fooled):
    out, summary = fooled
    r = summary["results"][0]
    for key in ("original_class", "original_probability", "final_class", "final_probability", "success",
                "linf", "linf_255", "l2", "l2_255", "steps", "loss_curve", "method", "panel"):
        assert key in r, key
    assert r["method"] == "pgd" and 1 <= r["steps"] <= 40 and len(r["loss_curve"]) >= r["steps"]
    assert abs(r["l2_255"] - 255 * r["l2"]) < 1e-2
    written = {Path(p).name for p in summary["outputs"]}
    assert {"cat_fool_ostrich.png", "cat_fool_ostrich_panel.png", "cat_fool_ostrich.json"} <= written
    sidecar = json.loads((out / "cat_fool_ostrich.json").read_text())
    assert sidecar["command"] == "fool" and sidecar["result"]["success"] is True
    from PIL import Image
    with Image.open(r["panel"]) as im:  # original | perturbation | adversarial, with captions and a title
        assert im.width > 3 * 224 and im.height > 224


def test_classify_reports_the_fooled_class(fooled):
    out, _ = fooled
    result, summary = _cli("classify", str(out / "cat_fool_ostrich.png"), "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert summary["results"][0]["top"][0]["class"] == "ostrich"


def test_untargeted_with_fraction_eps_changes_the_class(tmp_path):
    result, summary = _cli("fool", str(EXAMPLES / "coffee.jpg"), "--eps", "4/255", "--steps", "10",
                           "--out", str(tmp_path), "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    r = summary["results"][0]
    assert r["target"] is None and r["original_class"] == "espresso"
    assert r["success"] and r["final_class"] != "espresso"
    assert r["linf_255"] <= 4.0001
    assert (tmp_path / "coffee_fool.png").exists()


def test_unknown_target_suggests_a_class(tmp_path):
    result, _ = _cli("fool", str(EXAMPLES / "cat.jpg"), "--target", "ostrch", "--out", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 2
    assert "did you mean" in result.output and "ostrich" in result.output
    assert not list(tmp_path.iterdir())


def test_bad_method_is_a_clear_error(tmp_path):
    result, _ = _cli("fool", str(EXAMPLES / "cat.jpg"), "--method", "pgdd", "--out", str(tmp_path))
    assert result.exit_code == 2 and "unknown --method" in result.output


@pytest.fixture(scope="module")
def cat8(cat):
    return quantize(cat)


@pytest.mark.parametrize("method,kwargs", [
    ("fgsm", {}),  # untargeted one-step: enough to move the cat off its class
    ("pgd", {"norm": "l2", "steps": 20}),
])
def test_bounded_methods_untargeted(lite0, cat8, method, kwargs):
    res = dp.attack(lite0, cat8, method=method, seed=0, **kwargs)
    assert res.success.tolist() == [True]
    again = lite0.predict(quantize(res.images)).argmax(1)  # images are already 8-bit: rounding changes nothing
    assert torch.equal(quantize(res.images), res.images)
    assert int(again[0]) != int(res.original_class[0]) == int(lite0.predict(cat8).argmax(1)[0])
    if kwargs.get("norm") == "l2":
        assert float(res.l2[0]) <= 1.0 + 1e-5  # the default L2 budget holds after rounding
    else:
        assert float(res.linf[0]) <= LINF_8


@pytest.mark.slow
def test_minimum_norm_methods_reach_the_target_with_smaller_changes(lite0, cat8):
    target = lite0.class_index("ostrich")
    pgd = dp.attack(lite0, cat8, "ostrich", method="pgd", seed=0)
    for method, kwargs in (("szegedy", {"steps": 10, "search_steps": 2, "confidence": 0}),
                           ("cw", {"steps": 20, "search_steps": 2})):  # cw: the default confidence, 0.9
        res = dp.attack(lite0, cat8, "ostrich", method=method, seed=0, **kwargs)
        assert res.success.tolist() == [True], method
        probs = lite0.predict(res.images)[0]
        assert int(probs.argmax()) == target
        assert float(res.l2[0]) < float(pgd.l2[0]), method  # they look for the smallest change; pgd fills its ball
        assert res.steps.tolist() == [kwargs["steps"] * kwargs["search_steps"]]
        assert res.confidence_reached.tolist() == [True]
        if method == "cw":  # its hinge aims past the confidence's log-odds (at confidence 0 this cat: ~0.19)
            assert float(probs[target]) >= 0.9


def test_attack_is_repeatable_and_batched(lite0, cat8, coffee):
    x = torch.cat([cat8, quantize(coffee)])
    a = dp.attack(lite0, x, "ostrich", steps=5, seed=3)
    b = dp.attack(lite0, x, "ostrich", steps=5, seed=3)
    assert a.images.shape == x.shape and torch.equal(a.images, b.images)
    assert a.success.shape == (2,) and a.target.tolist() == [lite0.class_index("ostrich")] * 2


def test_ctrl_c_keeps_the_best_result_and_still_saves(tmp_path, monkeypatch):
    import deepprobe.cli.fool as fool_cli

    real = fool_cli._callback

    def interrupting(*args, **kwargs):
        inner = real(*args, **kwargs)

        def callback(step, total, loss, fwd):
            inner(step, total, loss, fwd)
            if step == 2:
                raise KeyboardInterrupt  # what Ctrl-C raises inside the optimizer loop
        return callback
    monkeypatch.setattr(fool_cli, "_callback", interrupting)
    result, summary = _cli("fool", str(EXAMPLES / "cat.jpg"), "--target", "ostrich", "--out", str(tmp_path),
                           "--json", "--device", "cpu")
    assert result.exit_code == 130, result.output
    r = summary["results"][0]
    assert r["stopped"] == "interrupted" and r["steps"] == 2
    saved = tmp_path / "cat_fool_ostrich.png"
    assert saved.exists() and (tmp_path / "cat_fool_ostrich_panel.png").exists()
    assert json.loads(saved.with_suffix(".json").read_text())["result"]["stopped"] == "interrupted"
    assert r["linf"] <= LINF_8


@pytest.mark.parametrize("typed,expected", [(["--confidence", "0.5"], 0.5), ([], None)])
def test_from_noise_takes_confidence_or_keeps_its_own_default(tmp_path, monkeypatch, typed, expected):
    import deepprobe.techniques.noise as noise

    seen = {}
    real = noise.fool_from_noise

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)
    monkeypatch.setattr(noise, "fool_from_noise", spy)
    result, summary = _cli("fool", "--from-noise", "--target", "starfish", "--method", "gradient", "--steps", "2",
                           *typed, "--out", str(tmp_path), "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert seen.get("confidence") == expected  # None: not passed, the noise default (0.99) applies
    r = summary["results"][0]
    assert r["success"] is (r["confidence"] >= (expected or 0.99) and r["predicted"] == "starfish")
