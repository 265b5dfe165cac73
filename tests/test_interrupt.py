"""Ctrl-C during an optimization: every optimizing command keeps and saves the best result so far and exits
with 130 (the shell's code for SIGINT), whichever command it is."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import deepprobe.engine as E
from deepprobe.cli import app

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


@pytest.fixture
def ctrl_c(monkeypatch):
    """Every engine optimization gets Ctrl-C (KeyboardInterrupt) at its first progress report, inside its loop."""
    real = E.optimize
    calls = []

    def interrupted(*args, callback=None, **kwargs):
        def stop(step, *rest):
            if callback is not None:
                callback(step, *rest)
            calls.append(step)
            raise KeyboardInterrupt
        return real(*args, callback=stop, **kwargs)
    monkeypatch.setattr(E, "optimize", interrupted)
    return calls


@pytest.mark.parametrize("command", sorted(SMALL))
def test_interrupted_optimizations_save_and_exit_130(command, ctrl_c, tmp_path):
    res = CliRunner().invoke(app, [*SMALL[command], "--out", str(tmp_path), "--json", "--device", "cpu"])
    assert ctrl_c, "the optimization was never reached"
    assert res.exit_code == 130, (res.exit_code, res.output)
    assert "interrupted" in res.stderr
    summary = json.loads(res.stdout)
    pngs = [p for p in summary["outputs"] if p.endswith(".png")]
    assert pngs and all((tmp_path / p.split("/")[-1]).exists() for p in pngs)  # the best so far is saved
