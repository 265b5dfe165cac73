"""No command touches the network at run time: each one runs (cheaply, in-process) with sockets blocked, and any
connection attempt fails the test, even one the code would catch and recover from.

RUNS holds one cheap invocation per command; a command added to the CLI without an entry here fails
`test_every_command_has_an_offline_run`, so new commands (and new model kinds) are covered by adding a line."""
from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from deepprobe.cli import app
from tiny_embedders import save_hf

runner = CliRunner()
CAT, FACE = "examples/cat.jpg", "examples/astronaut.jpg"


def _patch_file(tmp: Path) -> list[str]:
    path = tmp / "patch.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    return [str(path)]


def _sidecar(tmp: Path) -> list[str]:
    res = runner.invoke(app, ["fool", CAT, "--method", "fgsm", "--out", str(tmp / "first"), "--quiet"])
    assert res.exit_code == 0, res.output
    return [str(tmp / "first" / "cat_fool.json")]


# command path -> arguments (after the command), built in a fresh folder; extend with one line per new command
RUNS: dict[str, Callable[[Path], list[str]]] = {
    "classify": lambda tmp: [CAT],
    "models": lambda tmp: [],
    "layers": lambda tmp: ["--depth", "1"],
    "fool": lambda tmp: [CAT, "--method", "fgsm"],
    "patch train": lambda tmp: [CAT, "--target", "toaster", "--steps", "1", "--batch-size", "1", "--preview", "1"],
    "patch apply": lambda tmp: [*_patch_file(tmp), CAT, "--target", "toaster", "--size", "0.3"],
    "invert": lambda tmp: [CAT, "--layer", "conv_stem", "--size", "32", "--steps", "1"],
    "maximize": lambda tmp: ["--target", "ostrich", "--size", "32", "--steps", "1", "--photos", "none"],
    "dream": lambda tmp: [CAT, "--octaves", "1", "--steps", "1"],
    "age": lambda tmp: [FACE],
    "style": lambda tmp: [CAT, "examples/styles/swirls.jpg", "--size", "32", "--steps", "1"],  # + the judge model
    "explain": lambda tmp: [CAT],
    # a model kind: an embedder saved with save_pretrained (hf:DIR), every load local_files_only
    "explain --method attention": lambda tmp: [CAT, "--model", f"hf:{save_hf('Dinov2Model', tmp / 'dinov2')}"],
    "evaluate": lambda tmp: [CAT, "--metric", "deletion", "--steps", "1"],
    "robustness": lambda tmp: [CAT, "--attack", "fgsm", "--eps", "1/255", "--workers", "0"],
    "recipes": lambda tmp: [],
    "rerun": lambda tmp: [*_sidecar(tmp), "--out", str(tmp)],
    "report": lambda tmp: [str(tmp)],
}
NO_OUT = {"models", "recipes", "rerun", "report"}  # commands without --out (rerun's is in its arguments)


def _command_paths() -> list[str]:
    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if not subs:
            yield " ".join(path)
        for name, sub in (subs or {}).items():
            yield from walk(sub, path + [name])
    return list(walk(typer.main.get_command(app), []))


def test_every_command_has_an_offline_run():
    missing = sorted(set(_command_paths()) - set(RUNS))
    assert not missing, f"add a cheap run of each new command to RUNS in tests/test_offline.py: {missing}"


def test_the_block_catches_a_download(attempts):
    with pytest.raises(OSError):
        urllib.request.urlopen("https://download.pytorch.org/models/resnet18-f37072fd.pth", timeout=5)
    with pytest.raises(OSError):
        socket.create_connection(("huggingface.co", 443), timeout=5)
    assert len(attempts) == 2


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(RUNS))
def test_commands_run_without_the_network(command, attempts, tmp_path):
    args = [*command.split(), *RUNS[command](tmp_path)]
    if command not in NO_OUT:
        args += ["--out", str(tmp_path)]
    res = runner.invoke(app, args)
    assert not attempts, f"`deepprobe {command}` tried to reach the network: {attempts}"
    assert res.exit_code == 0, (res.exit_code, res.output)
