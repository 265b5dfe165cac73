"""Ctrl-C during an optimization: every optimizing command keeps and saves the best result so far and exits
with 130 (the shell's code for SIGINT), whichever command it is."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import deepprobe.engine as E
from deepprobe.cli import app
from deepprobe.io import quantize, read_image

SMALL = {
    "fool": ["fool", "examples/cat.jpg", "--target", "ostrich", "--steps", "5"],
    "patch train": ["patch", "train", "examples/cat.jpg", "examples/coffee.jpg", "--target", "toaster", "--steps", "5",
                    "--batch-size", "2", "--preview", "1"],
    "age": ["age", "examples/astronaut.jpg", "--target", "70", "--steps", "5", "--rounds", "1"],
    "invert": ["invert", "examples/cat.jpg", "--layer", "blocks.1", "--size", "64", "--steps", "5"],
    "maximize": ["maximize", "--target", "ostrich", "--size", "64", "--steps", "5", "--photos", "none"],
    "style": ["style", "examples/cat.jpg", "examples/styles/swirls.jpg", "--size", "64", "--steps", "5",
              "--optimizer", "adam", "--measure-model", "none"],
}


AFTER = 3  # Ctrl-C comes at the first progress report once this many steps ran (over all of a command's calls)


@pytest.fixture
def ctrl_c(monkeypatch):
    """Every engine optimization gets Ctrl-C (KeyboardInterrupt) at its first progress report once AFTER steps ran
    in all (fool runs in chunks of one step per call), inside its loop. Records, per call, where it started (the
    untouched image and patch, if any, before any step), the result it returned and the patch it ended with."""
    real = E.optimize
    calls = []

    def interrupted(bundle, param, *args, callback=None, **kwargs):
        before = sum(c["result"].steps for c in calls)

        def stop(step, *rest):
            if callback is not None:
                callback(step, *rest)
            if before + step >= AFTER:
                raise KeyboardInterrupt
        with torch.no_grad():  # an attack's untouched input is its base (its first iterate is a random start)
            start = (param.base if hasattr(param, "base") else param()).detach().cpu().clone()
        patch = getattr(param, "patch", None)
        start_patch = None if patch is None else patch.detach().cpu().clone()
        res = real(bundle, param, *args, callback=stop, **kwargs)
        calls.append({"start": start, "result": res, "start_patch": start_patch,
                      "patch": None if patch is None else param.patch.detach().cpu().clone()})
        return res
    monkeypatch.setattr(E, "optimize", interrupted)
    return calls


def _saved(summary: dict, tmp_path) -> torch.Tensor:
    """The command's main image as written (its first PNG), read back."""
    pngs = [p for p in summary["outputs"] if p.endswith(".png")]
    assert pngs and all((tmp_path / p.split("/")[-1]).exists() for p in pngs)
    return read_image(pngs[0])


def _off(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("command", sorted(SMALL))
def test_interrupted_optimizations_save_and_exit_130(command, ctrl_c, tmp_path):
    """The best result so far is what is saved, and it is not where the optimization started (saving the untouched
    input fails): fool, invert, maximize and style write the returned images (best or last iterate); patch train
    the patch it reached; age the photo with the edited face pasted back."""
    res = CliRunner().invoke(app, [*SMALL[command], "--out", str(tmp_path), "--json", "--device", "cpu"])
    assert ctrl_c, "the optimization was never reached"
    assert res.exit_code == 130, (res.exit_code, res.output)
    assert "interrupted" in res.stderr
    summary = json.loads(res.stdout)
    saved = _saved(summary, tmp_path)
    first, last = ctrl_c[0], ctrl_c[-1]
    result = last["result"]
    assert result.stopped == "interrupted" and sum(c["result"].steps for c in ctrl_c) >= AFTER
    if command == "patch train":
        assert _off(saved, quantize(last["patch"])) == 0
        assert _off(saved, quantize(first["start_patch"])) > 2 / 255
    elif command == "age":
        photo = read_image(SMALL["age"][1])
        assert saved.shape == photo.shape and _off(saved, photo) > 2 / 255
        assert float((saved - photo).abs().mean()) < 0.05  # the face changed, not the whole photo
    else:
        assert saved.shape == result.images.shape
        assert min(_off(saved, quantize(result.images)), _off(saved, quantize(result.final))) <= 1 / 255 + 1e-6
        assert _off(saved, quantize(first["start"])) > 1.5 / 255
