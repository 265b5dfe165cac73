"""`robustbench:NAME`: RobustBench model-zoo architectures read from checkpoints in RobustBench's own layout.

No checkpoint can be downloaded here, so each test builds a zoo architecture with random weights and saves it the
way RobustBench's files are (`models/<dataset>/<threat>/<NAME>.pt`, under 'state_dict' or 'last', with 'module.'
prefixes, without the normalization constants some architectures set themselves). RobustBench's own
`load_model` must then give the same network, bit for bit. Skipped only when the optional extra is absent.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import deepprobe as dp
from deepprobe.cli import app
from deepprobe.errors import DeepprobeError
from deepprobe.models.labels import CIFAR10_LABELS, CIFAR100_LABELS
from tests.test_cifar_data import write_cifar

pytestmark = pytest.mark.skipif(importlib.util.find_spec("robustbench") is None,
                                reason="pip install 'deepprobe[robustbench]'")
runner = CliRunner()
CAT = str(Path(__file__).resolve().parent.parent / "examples" / "cat.jpg")
SMALL = "Wong2020Fast"  # a PreActResNet-18 (the zoo's smallest CIFAR-10 L-inf network) with mu/sigma inside


def save_random_checkpoint(models: Path, name: str, dataset: str = "cifar10", threat: str = "Linf",
                           layout: str = "state_dict") -> Path:
    """A random-init zoo architecture saved as RobustBench's checkpoints are: `state_dict` (keys prefixed
    'module.', normalization constants left out), `last` (Kireev2021Effectiveness*) or a plain state_dict."""
    from deepprobe.models.robustbench import CONSTANT_KEYS, zoo_entry

    torch.manual_seed(0)
    net = zoo_entry(name, dataset, threat)["model"]()
    for m in net.modules():  # running statistics away from 0/1, so a mix-up of buffers shows in the outputs
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    state = {k: v for k, v in net.state_dict().items() if k not in CONSTANT_KEYS}
    if layout == "state_dict":
        checkpoint = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 10}
    elif layout == "last":
        checkpoint = {"last": state, "best": {k: torch.zeros_like(v) for k, v in state.items()}}
    else:
        checkpoint = {f"module.{k}": v for k, v in state.items()}
    path = models / dataset / threat / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """A RobustBench model_dir holding a random-init Wong2020Fast checkpoint."""
    models = tmp_path_factory.mktemp("robustbench") / "models"
    save_random_checkpoint(models, SMALL)
    return models


def _robustbench_reference(name: str, models: Path, dataset: str, threat: str):
    from deepprobe.models.robustbench import model_zoo

    model_zoo()  # robustbench's top level imports autoattack (not on PyPI): this makes its submodules importable
    from robustbench.utils import load_model

    return load_model(name, model_dir=str(models), dataset=dataset, threat_model=threat)


@pytest.mark.slow
@pytest.mark.parametrize("name,dataset,threat,layout", [
    (SMALL, "cifar10", "Linf", "state_dict"),
    ("Rebuffi2021Fixing_R18_ddpm", "cifar100", "Linf", "plain"),
    ("Kireev2021Effectiveness_RLAT", "cifar10", "corruptions", "last"),
])
def test_the_network_is_robustbenchs(tmp_path, name, dataset, threat, layout):
    models = tmp_path / "models"
    save_random_checkpoint(models, name, dataset, threat, layout)
    probe = dp.load_model(f"robustbench:{name}", weights=models, device="cpu", dataset=dataset, threat_model=threat)
    reference = _robustbench_reference(name, models, dataset, threat)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(probe.net(x), reference(x))
    assert probe.spec == f"robustbench:{dataset}/{threat}/{name}"
    assert probe.labels == (CIFAR10_LABELS if dataset == "cifar10" else CIFAR100_LABELS)
    assert probe.input_size == (32, 32)
    assert probe.preprocess.mean == (0.0,) * 3 and probe.preprocess.std == (1.0,) * 3  # [0,1] in, as RobustBench
    assert not any(p.requires_grad for p in probe.net.parameters())


def test_checkpoint_places_and_errors(zoo, tmp_path, monkeypatch):
    file = zoo / "cifar10" / "Linf" / f"{SMALL}.pt"
    by_dir = dp.load_model(f"robustbench:{SMALL}", weights=zoo, device="cpu")
    by_file = dp.load_model(f"robustbench:{SMALL}", weights=file, device="cpu")
    monkeypatch.chdir(zoo.parent)  # RobustBench's default model_dir: ./models
    by_default = dp.load_model(f"robustbench:{SMALL}", device="cpu")
    recorded = dp.load_model(by_default.spec, device="cpu")  # the recorded form names the zoo itself
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        outs = [b.net(x) for b in (by_dir, by_file, by_default, recorded)]
    assert all(torch.equal(outs[0], o) for o in outs[1:])
    assert by_dir.weights == str(zoo) and recorded.spec == by_default.spec
    assert by_default.origin == str(Path("models/cifar10/Linf") / f"{SMALL}.pt")  # what was read, in the sidecars
    monkeypatch.chdir(tmp_path)  # no checkpoint here: --random-init builds the architecture alone, and says so
    bare = dp.load_model(f"robustbench:{SMALL}", device="cpu", random_init=True)
    assert bare.random_init and bare.origin == "random weights" and bare.spec == by_default.spec
    with torch.no_grad():
        assert not torch.equal(bare.net(x), outs[0])

    cases = [
        (dict(spec=f"robustbench:{SMALL}", threat_model="L2"),
         r"RobustBench has no model 'Wong2020Fast' for cifar10 L2"),
        (dict(spec="robustbench:Wong2020Fats"), r"did you mean Wong2020Fast"),
        (dict(spec="robustbench:Carmon2019Unlabeled"),
         r"no checkpoint for robustbench:Carmon2019Unlabeled \(cifar10, Linf\): looked for "
         r"models/cifar10/Linf/Carmon2019Unlabeled\.pt .*never downloads.*--weights FILE"),
        (dict(spec=f"robustbench:{SMALL}", dataset="mnist"), r"unknown --dataset 'mnist' \(choose from cifar10, "
                                                             r"cifar100, imagenet\)"),
        (dict(spec="robustbench:Chen2020Adversarial"), r"ensemble of 3 checkpoints"),
        (dict(spec=f"robustbench:cifar10/Linf/{SMALL}", dataset="cifar100"), r"names cifar10, but --dataset cifar100"),
        (dict(spec="timm:resnet18", dataset="cifar10"), r"--dataset and --threat-model go with robustbench:NAME"),
    ]
    for kwargs, message in cases:
        with pytest.raises(DeepprobeError, match=message):
            dp.load_model(kwargs.pop("spec"), device="cpu", **kwargs)
    # another architecture's checkpoint under this name: the first key that does not fit, in one line
    other = tmp_path / "models" / "cifar10" / "Linf" / "Ding2020MMA.pt"
    other.parent.mkdir(parents=True)
    torch.save(torch.load(file, weights_only=True), other)
    with pytest.raises(DeepprobeError, match=r"weights Ding2020MMA\.pt do not fit the architecture: .conv1.weight. has shape"):
        dp.load_model("robustbench:Ding2020MMA", weights=tmp_path / "models", device="cpu")


def test_imagenet_geometry_follows_the_zoo():
    from deepprobe.models.robustbench import _preprocess, zoo_entry

    pre = _preprocess("imagenet", zoo_entry("Salman2020Do_R18", "imagenet", "Linf"))
    assert (pre.resize, pre.crop, pre.interpolation) == (256, (224, 224), "bilinear")  # 'Res256Crop224'
    with pytest.raises(DeepprobeError, match="torchvision's pretrained network"):
        dp.load_model("robustbench:Standard_R50", dataset="imagenet", device="cpu")


@pytest.mark.slow
def test_every_command_runs_on_a_robustbench_checkpoint(zoo, tmp_path, monkeypatch, attempts):
    """From the CLI, with the network blocked: the checkpoint is found in ./models as RobustBench keeps it."""
    monkeypatch.chdir(zoo.parent)
    data = tmp_path / "cifar"
    write_cifar(data, n=6)
    patch = tmp_path / "patch.png"
    runs = {
        "classify": [CAT],
        "layers": ["--depth", "1"],
        "fool": [CAT, "--method", "fgsm", "--eps", "8/255"],
        "explain": [CAT, "--layer", "layer4"],
        "evaluate": [CAT, "--metric", "deletion", "--steps", "1"],
        "robustness": [f"cifar10:{data}", "--limit", "4", "--attack", "apgd-ce", "--steps", "2", "--eps", "8/255",
                       "--workers", "0"],
        "maximize": ["--target", "cat", "--steps", "1", "--photos", "none"],
        "invert": [CAT, "--layer", "layer1", "--steps", "1"],
        "patch train": [CAT, "--target", "dog", "--steps", "1", "--batch-size", "1", "--preview", "1"],
        "patch apply": [str(patch), CAT, "--target", "dog", "--size", "0.3"],
    }
    outputs = {}
    for command, args in runs.items():
        if command == "patch apply":
            args[0] = outputs["patch train"]
        out = tmp_path / command.replace(" ", "_")
        res = runner.invoke(app, [*command.split(), *args, "--model", f"robustbench:{SMALL}", "--out", str(out),
                                  "--json", "--quiet"])
        assert res.exit_code == 0, (command, res.output)
        summary = json.loads(res.stdout)
        if command == "patch train":
            outputs[command] = next(p for p in summary["outputs"] if p.endswith(".png") and "preview" not in p)
        if command != "layers":
            assert summary["model"] == f"robustbench:cifar10/Linf/{SMALL}", command
    assert not attempts
    robust = json.loads((tmp_path / "robustness" / "summary.json").read_text())
    assert robust["n"] == 4 and robust["config"]["model"] == f"robustbench:cifar10/Linf/{SMALL}"
