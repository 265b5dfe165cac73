"""Models at their native size and channels: --input-size (CLI, API, recipes), what a python: module declares,
grey input for one-channel networks, and every command from the CLI on a 32x32 classifier (tests/tiny32.py:
which quadrant holds a bright square, shipped trained weights, so maps and attacks can be judged)."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import deepprobe as dp
from deepprobe.cli import app
from deepprobe.errors import DeepprobeError
from deepprobe.io import read_image, save_png
from tiny32 import FIXTURE, quadrant_images

TINY = ["--model", "python:tests.tiny32:build", "--weights", str(FIXTURE)]


def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny():
    return dp.load_model("python:tests.tiny32:build", weights=FIXTURE, device="cpu")


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    """Four 32x32 PNGs, one per quadrant, and their labels."""
    folder = tmp_path_factory.mktemp("squares")
    x, y = quadrant_images(12, seed=77)
    picked = [int((y == q).nonzero()[0]) for q in range(4)]
    for q, i in enumerate(picked):
        save_png(x[i], folder / f"q{q}.png")
    return folder, [folder / f"q{q}.png" for q in range(4)]


@pytest.fixture
def fixed32(tmp_path, monkeypatch):
    """A user module whose network only runs at 32x32 (a flattening head) and declares nothing."""
    (tmp_path / "fixed32.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def build():
            torch.manual_seed(0)
            return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 32 * 32, 3))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "python:fixed32:build"


def test_input_size_reaches_the_model_from_the_cli_the_api_and_recipes(fixed32, tmp_path, examples):
    res = cli("classify", examples / "cat.jpg", "--model", fixed32, "--out", tmp_path)
    assert res.exit_code == 2 and "failed on a (1,3,224,224) image" in res.stderr
    for size in ("32", "32,32", "32x32"):
        res = cli("classify", examples / "cat.jpg", "--model", fixed32, "--input-size", size, "--json", "--out", tmp_path)
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["input_size"] == [32, 32]
    res = cli("classify", examples / "cat.jpg", "--model", fixed32, "--input-size", "0", "--out", tmp_path)
    assert res.exit_code == 2 and "--input-size must be N or H,W" in res.stderr
    recipe = tmp_path / "cifar.toml"
    recipe.write_text('command = "classify"\n[options]\ninput_size = 32\ntop = 2\n')
    res = cli("classify", examples / "cat.jpg", "--model", fixed32, "--recipe", recipe, "--json", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["input_size"] == [32, 32] and summary["arguments"]["input_size"] == "32,32"
    probe = dp.load_model(fixed32, input_size=(32, 32), device="cpu")
    assert probe.input_size == (32, 32) and probe.num_classes == 3
    # a rerun repeats the size (it is one of the recorded arguments)
    res = cli("fool", examples / "cat.jpg", "--method", "fgsm", "--model", fixed32, "--input-size", "32",
              "--out", tmp_path / "fool")
    assert res.exit_code == 0, res.output
    res = cli("rerun", tmp_path / "fool" / "cat_fool.json", "--trust", "--out", tmp_path / "again", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["input_size"] == [32, 32]


def test_an_image_at_the_input_size_is_not_resized_and_others_are(tiny, squares, examples):
    _, paths = squares
    photo = read_image(paths[0])
    assert tuple(photo.shape[-2:]) == (32, 32) and torch.equal(tiny.load_image(paths[0]), photo.view(1, 3, 32, 32))
    assert tuple(tiny.load_image(examples / "cat.jpg").shape) == (1, 3, 32, 32)
    wide = dp.load_model("python:tests.tiny32:build", input_size=(32, 48), device="cpu")
    assert tuple(wide.load_image(examples / "cat.jpg").shape) == (1, 3, 32, 48)  # covers the crop, not padded
    assert wide.load_image(examples / "cat.jpg")[..., :2].std() > 0.01


def test_a_python_module_declares_size_normalization_and_labels(tiny, tmp_path, monkeypatch):
    import tiny32

    assert tiny.input_size == (32, 32) and tiny.labels == tiny32.labels
    raw = tiny32.build()
    raw.load_state_dict(torch.load(FIXTURE, weights_only=True))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # the module's mean/std are applied inside the bundle's network
        assert torch.allclose(tiny.net(x), raw.eval()((x - 0.25) / 0.25), atol=1e-5)
    (tmp_path / "badstd.py").write_text("from tests.tiny32 import build\nstd = (0.5, 0.0, 0.5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DeepprobeError, match="std must be 1 or 3 numbers above 0"):
        dp.load_model("python:badstd:build", device="cpu")


def test_a_one_channel_first_layer_gets_grey_images(examples, tmp_path, monkeypatch):
    probe = dp.load_model("python:tests.tiny32:grey", device="cpu")
    seen = []
    first = probe.inner[0]
    handle = first.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape)))
    x = probe.load_image(examples / "cat.jpg")
    probe.predict(x)
    handle.remove()
    assert seen == [(1, 1, 32, 32)]
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # shown and saved as grey
    colour = read_image(examples / "cat.jpg")
    reference = Image.open(examples / "cat.jpg").convert("L")  # PIL's luma, the same weights
    ours = dp.load_model("python:tests.tiny32:grey", input_size=tuple(colour.shape[-2:]), device="cpu")
    grey = ours.prepare(colour)[0, 0]
    expected = torch.from_numpy(np.asarray(reference, dtype=np.float32)) / 255
    assert (grey - expected).abs().max() < 1.5 / 255
    with torch.no_grad():  # the network reads the luma of an RGB batch
        rgb = torch.rand(2, 3, 32, 32)
        luma = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        assert torch.allclose(probe.net(rgb), probe.inner((luma - 0.25) / 0.25), atol=1e-5)  # module's mean/std
    (tmp_path / "mlp28.py").write_text("from torch import nn\ninput_size = 28\n"
                                       "def build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert dp.load_model("python:mlp28:build", device="cpu").preprocess.channels == 1


def test_attributions_land_on_the_square_at_32_px(tiny):
    x, y = quadrant_images(16, seed=123)
    maps = dp.explain(tiny, x, method="ig", target=y.tolist())
    assert maps.shape == (16, 32, 32)
    quadrants = torch.stack([maps[:, :16, :16], maps[:, :16, 16:], maps[:, 16:, :16], maps[:, 16:, 16:]], 1)
    assert (quadrants.flatten(2).mean(2).argmax(1) == y).sum() >= 15  # the quadrant holding the square


def test_fool_on_a_32px_model_saves_images_the_model_reads_as_fooled(squares, tmp_path, tiny):
    _, paths = squares
    res = cli("fool", *paths, *TINY, "--eps", "16/255", "--out", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    for record in json.loads(res.stdout.strip().splitlines()[-1])["results"]:
        saved = tiny.load_image(record["output"])
        assert saved.shape[-2:] == (32, 32)
        before = int(tiny.predict(tiny.load_image(record["input"])).argmax())
        assert int(tiny.predict(saved).argmax()) != before, record["input"]


def _runs(folder, paths):
    q0 = str(paths[0])
    return {
        "classify": [q0],
        "fool": [q0, "--method", "fgsm"],
        "fool --from-noise": ["--from-noise", "--target", "top right", "--steps", "3"],
        "explain": [q0, "--method", "gradcam", "--method", "ig"],
        "evaluate": [q0, "--metric", "deletion", "--steps", "2"],
        "robustness": [str(folder), "--attack", "pgd", "--eps", "4/255", "--steps", "2", "--workers", "0"],
        "maximize": ["--target", "top right", "--steps", "3", "--photos", str(folder)],
        "invert": [q0, "--steps", "3"],
        "patch train": [q0, "--target", "bottom right", "--steps", "2", "--batch-size", "1"],
        "dream": [q0, "--steps", "2", "--octaves", "2"],
        "style": [q0, str(paths[1]), "--steps", "2", "--size", "32", "--measure-model", "none"],
        "layers": [],
    }


@pytest.mark.parametrize("command", list(_runs(None, [None, None])))
def test_every_command_runs_on_a_32px_python_model(command, squares, tmp_path):
    folder, paths = squares
    args = [*command.split(), *_runs(folder, paths)[command]]
    res = cli(*args, *TINY, "--out", tmp_path / "out", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["model"] == "python:tests.tiny32:build" and summary["weights"] == str(FIXTURE)
    images = [p for p in map(str, summary["outputs"]) if p.endswith(".png")]
    if command == "patch train":
        applied = cli("patch", "apply", images[0], str(paths[2]), *TINY, "--target", "bottom right",
                      "--out", tmp_path / "applied")
        assert applied.exit_code == 0, applied.output
    if command in ("fool", "invert", "dream", "maximize"):
        result = [p for p in images if "_panel" not in p and "_grid" not in p]
        assert result and all(Image.open(p).size == (32, 32) for p in result)  # drawn at the native size


def test_a_vit_classifier_takes_another_input_size(tmp_path):
    """A timm ViT fixes its size in its position embeddings: --input-size rebuilds it with timm's dynamic size
    (embeddings interpolated), the same weights, the same logits at its native size."""
    import timm

    net = timm.create_model("vit_tiny_patch16_224", num_classes=3).eval()
    torch.save(net.state_dict(), tmp_path / "vit.pth")
    with pytest.raises(Exception):
        net(torch.rand(1, 3, 64, 64))  # the plain ViT refuses another size
    small = dp.load_model("timm:vit_tiny_patch16_224", weights=tmp_path / "vit.pth", input_size=64, device="cpu")
    assert small.input_size == (64, 64) and small.net(torch.rand(2, 3, 64, 64)).shape == (2, 3)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(small.net(x), net((x - small.net.mean) / small.net.std), atol=1e-5)
