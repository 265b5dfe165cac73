"""`deepprobe rerun`: a sidecar rebuilds its command line and reproduces the run pixel for pixel.

The mechanism is tested on a tiny seeded command registered on a fresh Typer app (positional list,
repeated option, --x/--no-x flag, a fraction, an Options field typed, one set only by a recipe); then on
the real `deepprobe fool` with a couple of PGD steps (a random start in the eps-ball, so the seed matters).
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from deepprobe.cli.common import command, opt
from deepprobe.cli.rerun import command_line, load_sidecar, rerun
from deepprobe.options.classify import Options as ClassifyOptions

runner = CliRunner()


def _tiny_app() -> typer.Typer:
    """A seeded command that writes a noisy crop of each photo (named "classify" to borrow its Options)."""
    app = typer.Typer()

    @app.callback()
    def main():
        """Test app."""

    @command(app, "classify")
    def tiny(run, images: list[str] = typer.Argument(...),
             scale: str = typer.Option("1/8", "--scale"),
             tag: list[str] = typer.Option(None, "--tag", "-t"),
             invert: bool = typer.Option(False, "--invert/--no-invert"),
             top: int = opt(ClassifyOptions, "top", "--top", "-k")):
        import torch

        from deepprobe.io import read_image

        gen = torch.Generator().manual_seed(run.common.seed)
        amount = float(Fraction(scale))
        for path in images:
            x = read_image(path)[..., :64, :64]
            y = (1 - amount) * x + amount * torch.rand(x.shape, generator=gen)
            y = 1 - y if invert else y
            name = f"{Path(path).stem}_{'-'.join(tag or ['none'])}_{top}_{run.options.batch_size}.png"
            run.save_image(y, name, result={"input": path, "loss_curve": [3.0, 2.0, 1.5]})

    return app


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long error lines


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_tiny_command_reruns_pixel_for_pixel(tmp_path, examples, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = _tiny_app()
    recipe = tmp_path / "bs.toml"
    recipe.write_text('command = "classify"\n[options]\nbatch_size = 3\n')  # batch_size has no flag here
    photo = str(examples / "cat.jpg")
    res = runner.invoke(app, ["classify", photo, str(examples / "coffee.jpg"), "--scale", "1/3", "-t", "a",
                              "--tag", "b", "--invert", "-k", "2", "--seed", "7", "--recipe", str(recipe),
                              "--out", "o", "--quiet"])
    assert res.exit_code == 0, res.output
    first = Path("o/cat_a-b_2_3.png")
    sidecar = first.with_suffix(".json")
    record = load_sidecar(sidecar)
    assert record["options"] == {"top": 2, "batch_size": 3, "min_score": 0.5, "alpha": 0.5, "neighbors": 20,
                                 "temperature": 0.07}

    rebuilt = command_line(app, record)
    argv = rebuilt.argv
    assert argv[0] == "classify" and argv.count("--tag") == 2 and "--invert" in argv
    assert argv[argv.index("--seed") + 1] == "7" and argv[argv.index("--top") + 1] == "2"
    assert argv[argv.index("--") + 1:] == [photo, str(examples / "coffee.jpg")]
    assert "batch_size = 3" in rebuilt.recipe  # flagless option restored through a recipe
    assert not any(a in argv for a in ("--quiet", "--recipe", "--force"))

    recipe.unlink()  # the rerun must not need the original recipe
    assert rerun(app, record, quiet=True) == 0
    second = Path("o/cat_a-b_2_3-1.png")  # never overwrites; same options give the same name
    assert second.is_file() and first.is_file()
    assert np.array_equal(_pixels(first), _pixels(second))
    assert load_sidecar(second.with_suffix(".json"))["arguments"]["seed"] == 7

    # Overrides after the sidecar win; a different seed really changes the pixels (the check can fail).
    assert rerun(app, record, out="p", extra=["--seed", "8", "--no-invert"], quiet=True) == 0
    third = Path("p/cat_a-b_2_3.png")
    assert not np.array_equal(_pixels(first), _pixels(third))
    assert not np.array_equal(_pixels(first), 255 - _pixels(third))


def test_rerun_from_another_folder_finds_relative_inputs(tmp_path, examples, monkeypatch):
    work = tmp_path / "work"
    (work / "pics").mkdir(parents=True)
    (work / "pics" / "cat.jpg").write_bytes((examples / "cat.jpg").read_bytes())
    monkeypatch.chdir(work)
    app = _tiny_app()
    assert runner.invoke(app, ["classify", "pics/cat.jpg", "--out", "o", "-q"]).exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert rerun(app, load_sidecar(work / "o" / "cat_none_5_16.json"), quiet=True) == 0
    assert np.array_equal(_pixels(work / "o" / "cat_none_5_16.png"), _pixels(work / "o" / "cat_none_5_16-1.png"))


def test_rerun_errors_are_one_line(tmp_path):
    from deepprobe.cli import app

    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    res = runner.invoke(app, ["rerun", str(bad)])
    assert res.exit_code == 2 and "not a JSON sidecar" in _flat(res.output) and "Traceback" not in res.output
    bad.write_text(json.dumps({"command": "nosuch", "arguments": {}}))
    res = runner.invoke(app, ["rerun", str(bad)])
    assert res.exit_code == 2 and "no `nosuch` command" in _flat(res.output)


@pytest.mark.slow
def test_fool_reruns_pixel_for_pixel(tmp_path, examples, lite0):
    from deepprobe.cli import app

    res = runner.invoke(app, ["fool", str(examples / "cat.jpg"), "--steps", "2", "--rounds", "0", "--eps", "4/255",
                              "--seed", "3", "--device", "cpu", "--out", str(tmp_path), "--quiet"])
    assert res.exit_code in (0, 1), res.output  # 1: not fooled in 2 steps, still written
    first = tmp_path / "cat_fool.png"
    res = runner.invoke(app, ["rerun", str(first.with_suffix(".json")), "--quiet"])
    assert res.exit_code in (0, 1), res.output
    second = tmp_path / "cat_fool-1.png"
    assert np.array_equal(_pixels(first), _pixels(second))
    # the attack changed pixels of the photo as the model reads it (224x224, 8-bit), within its 4/255 budget
    original = lite0.load_image(examples / "cat.jpg")[0].permute(1, 2, 0).mul(255).round().byte().numpy()
    change = np.abs(_pixels(first).astype(int) - original.astype(int))
    assert _pixels(first).shape == original.shape and 0 < change.max() <= 4
    a, b = (load_sidecar(p.with_suffix(".json")) for p in (first, second))
    assert a["arguments"]["eps"] == b["arguments"]["eps"] == pytest.approx(4 / 255)
    assert a["result"]["loss_curve"] == b["result"]["loss_curve"]
    assert a["run_id"] != b["run_id"]


THEIR_MODEL = '''
from pathlib import Path

import torch.nn as nn


def make():
    Path(__file__).with_name("their_code_ran").write_text("yes")
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
'''


def _one_error_line(res) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


def test_rerun_runs_a_sidecars_python_model_only_with_trust(tmp_path, examples, monkeypatch):
    """A sidecar is a file anyone can write; its python: spec would import and call their code."""
    from deepprobe.cli import app

    (tmp_path / "their_model.py").write_text(THEIR_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    sidecar = tmp_path / "outputs" / "cat.json"
    sidecar.parent.mkdir()
    sidecar.write_text(json.dumps({"command": "classify", "cwd": str(tmp_path), "arguments": {
        "images": [str(examples / "cat.jpg")], "model": "python:their_model:make", "device": "cpu"}}))
    ran = tmp_path / "their_code_ran"
    line = _one_error_line(runner.invoke(app, ["rerun", str(sidecar)]))
    assert "python:their_model:make" in line and "--trust" in line and not ran.exists()
    shown = runner.invoke(app, ["rerun", str(sidecar), "--print"])  # inspecting it runs nothing
    assert shown.exit_code == 0 and "python:their_model:make" in shown.stdout and not ran.exists()
    res = runner.invoke(app, ["rerun", str(sidecar), "--trust", "--json"])
    assert res.exit_code == 0, res.output
    assert ran.exists() and json.loads(res.stdout)["model"] == "python:their_model:make"


def test_rerun_replays_a_working_folder_outside_the_sidecars_only_with_trust(tmp_path, examples, monkeypatch):
    """Relative paths are resolved in the recorded working folder: from elsewhere, only one inside the sidecar's
    folder is taken without --trust (the current folder is no replay at all)."""
    from deepprobe.cli import app

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (work / "pics").mkdir(parents=True)
    (work / "outputs").mkdir()
    elsewhere.mkdir()
    (work / "pics" / "cat.jpg").write_bytes((examples / "cat.jpg").read_bytes())
    record = {"command": "classify", "cwd": str(work), "arguments": {"images": ["pics/cat.jpg"], "device": "cpu"}}
    outside, inside = work / "outputs" / "cat.json", work / "cat.json"
    for path in (outside, inside):
        path.write_text(json.dumps(record))

    def top(res) -> str:
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)["results"][0]["top"][0]["class"]

    cats = {"tiger cat", "Egyptian cat", "tabby"}
    monkeypatch.chdir(elsewhere)
    line = _one_error_line(runner.invoke(app, ["rerun", str(outside), "--json"]))
    assert f"it ran in {work}, outside the sidecar's folder" in " ".join(line.split()) and "--trust" in line
    assert top(runner.invoke(app, ["rerun", str(outside), "--json", "--trust"])) in cats
    assert top(runner.invoke(app, ["rerun", str(inside), "--json"])) in cats
    monkeypatch.chdir(work)
    assert top(runner.invoke(app, ["rerun", str(outside), "--json"])) in cats


def test_rerun_prints_paths_as_they_are_not_as_markup(tmp_path):
    from deepprobe.cli import app

    missing = tmp_path / "a[red]b.json"
    assert _one_error_line(runner.invoke(app, ["rerun", str(missing)])) == f"error: {missing}: no such sidecar file"
