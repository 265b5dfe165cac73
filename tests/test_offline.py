"""No command touches the network at run time: each one runs (cheaply, in-process) with sockets blocked, and any
connection attempt fails the test, even one the code would catch and recover from.

RUNS holds one cheap invocation per command; a command added to the CLI without an entry here fails
`test_every_command_has_an_offline_run`, so new commands (and new model kinds) are covered by adding a line.
Each kind of `hf:DIR` model (image classifier, CLIP, DETR with a published config) loads and runs the same way:
add a saver to HF_MODELS for a new kind."""
from __future__ import annotations

import json
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


# ------------------------------------------------------------------------------------------ hf: models
def _hf_classifier(folder: Path) -> list[str]:
    """A ViT image classifier saved as a user saves google/vit-*: model plus its image processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, num_labels=2, id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return []


def _hf_clip(folder: Path) -> list[str]:
    """CLIP saved with its processor (tokenizer and image processor), as openai/clip-* is."""
    from tiny_hf import PROMPTS, build_clip, save_clip

    save_clip(*build_clip(), folder)
    return [a for p in PROMPTS for a in ("--text", p)]


def _hf_detr(folder: Path) -> list[str]:
    """DETR saved with its image processor, its config as facebook/detr-resnet-50 publishes it: a timm backbone
    with pretrained weights (which transformers would fetch from the Hub) and backbone_kwargs."""
    import torch
    from tiny_hf import save_detr
    from transformers import DetrConfig, DetrForObjectDetection

    torch.manual_seed(0)
    config = DetrConfig(backbone="test_resnet", d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16,
                        num_queries=3, num_labels=2)
    save_detr(DetrForObjectDetection(config).eval(), folder, 64)
    saved = json.loads((folder / "config.json").read_text())
    saved.pop("backbone_config")
    saved.update(backbone="test_resnet", use_timm_backbone=True, use_pretrained_backbone=True,
                 backbone_kwargs={"in_chans": 3, "out_indices": [1, 2, 3, 4]})
    (folder / "config.json").write_text(json.dumps(saved))
    return ["--min-score", "0"]


HF_MODELS = {"classifier": _hf_classifier, "clip": _hf_clip, "detr": _hf_detr}


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    """Each kind saved once, while the network is still there (the downloads a user made before going offline)."""
    pytest.importorskip("transformers")
    folders = {}
    for kind, save in HF_MODELS.items():
        folder = tmp_path_factory.mktemp(f"hf_{kind}")
        folders[kind] = (folder, save(folder))
    return folders


@pytest.mark.parametrize("form", ["folder", "hub id"])
@pytest.mark.parametrize("kind", sorted(HF_MODELS))
def test_hf_models_load_and_run_without_the_network(kind, form, hf_folders, attempts, tmp_path, monkeypatch):
    """`hf:DIR` and `hf:ORG/NAME` (its snapshot in a temporary HF_HOME, laid out as the hub client keeps it) of
    each kind load and classify with every socket blocked, with the Hub's own offline switch off (HF_HUB_OFFLINE
    0): deepprobe itself must keep transformers, timm and the hub client on the disk."""
    import shutil

    import huggingface_hub.constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    folder, extra = hf_folders[kind]
    spec = str(folder)
    if form == "hub id":
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        repo = tmp_path / "hf" / "hub" / f"models--tiny-org--tiny-{kind}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("0123abcd")
        shutil.copytree(folder, repo / "snapshots" / "0123abcd")
        spec = f"tiny-org/tiny-{kind}"
    res = runner.invoke(app, ["classify", CAT, "--model", f"hf:{spec}", *extra, "--out", str(tmp_path / "out"),
                              "--json"])
    assert not attempts, f"loading hf:{spec} ({kind}) tried to reach the network: {attempts}"
    assert res.exit_code == 0, (res.exit_code, res.output)
    summary = json.loads(res.stdout)
    assert summary["results"][0]["input"] == CAT and summary["model"] == f"hf:{spec}"
