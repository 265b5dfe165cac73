"""`robustbench:NAME`: an architecture of RobustBench's model zoo with its checkpoint, read offline.

RobustBench's own `load_model` downloads a missing checkpoint; this reads the same file from the same place
(`<model_dir>/<dataset>/<threat model>/<NAME>.pt`, model_dir `./models` by default, or `--weights FILE|DIR`) and
never goes online. The architecture comes from `robustbench.model_zoo` alone (the package's top level also
imports its download and evaluation code, and `autoattack`, which PyPI does not have). The checkpoint is
unwrapped as RobustBench does it (`state_dict`, `module.` and `model.` prefixes; ImageNet models wrap their
network with the normalization under `model.`) and read with `weights_only=True`. Images go in as RobustBench
feeds them: [0,1], normalization (when any) inside the model; 32 px for CIFAR, the zoo entry's resize and crop
for ImageNet.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import DeepprobeError
from .labels import CIFAR10_LABELS, CIFAR100_LABELS, imagenet_labels
from .preprocess import Preprocess
from .weights import fit_state_dict

DATASETS = ("cifar10", "cifar100", "imagenet")
THREAT_MODELS = ("Linf", "L2", "corruptions")
DEFAULT_DATASET, DEFAULT_THREAT_MODEL = "cifar10", "Linf"  # robustbench.utils.load_model's defaults
MODEL_DIR = "models"  # RobustBench's default model_dir, relative to the working folder
INSTALL = "pip install 'deepprobe[robustbench]'"
# ImageNet preprocessing names of the zoo -> (resize of the short side or None, crop, interpolation)
IMAGENET_GEOMETRY = {"Res256Crop224": (256, 224, "bilinear"), "BicubicRes256Crop224": (256, 224, "bicubic"),
                     "Res224": (None, 224, "bilinear"), "Crop288": (288, 288, "bilinear"), None: (256, 224, "bilinear")}
# Buffers some zoo architectures set in their constructor that their checkpoints lack (RobustBench then loads
# non-strictly): these alone may be missing from a checkpoint.
CONSTANT_KEYS = ("mu", "sigma", "mean", "std", "normalize.mean", "normalize.std")


def parse(rest: str, dataset: str | None, threat_model: str | None) -> tuple[str, str, str]:
    """(dataset, threat model, name) from `NAME` plus the options, or from the recorded form
    `DATASET/THREAT/NAME` (what bundle.spec holds, so a sidecar or a resume folder names the model fully)."""
    parts = rest.split("/")
    if len(parts) == 3:
        ds, tm, name = parts
        for given, own, what in ((dataset, ds, "--dataset"), (threat_model, tm, "--threat-model")):
            if given is not None and given.lower() != own.lower():
                raise DeepprobeError(f"robustbench:{rest} names {own}, but {what} {given} was given")
    elif len(parts) == 1:
        ds, tm, name = dataset or DEFAULT_DATASET, threat_model or DEFAULT_THREAT_MODEL, rest
    else:
        raise DeepprobeError(f"robustbench: spec is robustbench:NAME (with --dataset, --threat-model), got {rest!r}")
    ds = _choice(ds, DATASETS, "--dataset")
    tm = _choice(tm, THREAT_MODELS, "--threat-model")
    if not name:
        raise DeepprobeError("robustbench: spec needs a model name, e.g. robustbench:Carmon2019Unlabeled")
    return ds, tm, name


def _choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    for a in allowed:
        if value.lower() == a.lower():
            return a
    raise DeepprobeError(f"unknown {option} {value!r} (choose from {', '.join(allowed)})")


def model_zoo():
    """robustbench.model_zoo's `model_dicts`, imported without running the package's top-level module when that
    fails (robustbench 1.1.1 imports `autoattack`, a package PyPI does not carry; the zoo needs none of it)."""
    if importlib.util.find_spec("robustbench") is None:
        raise DeepprobeError(f"robustbench: models need the robustbench package: {INSTALL}")
    with warnings.catch_warnings():  # its imports warn about deprecated timm paths and pkg_resources: not ours
        warnings.simplefilter("ignore")
        return _import_zoo()


def _import_zoo():
    """The zoo through the package, or through a bare package module when its top level cannot import."""
    try:
        importlib.import_module("robustbench")
    except ImportError:
        spec = importlib.util.find_spec("robustbench")
        package = types.ModuleType("robustbench")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["robustbench"] = package
    try:
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    except ImportError as exc:
        raise DeepprobeError(f"cannot import robustbench's model zoo ({exc}): {INSTALL}") from exc
    return model_dicts, BenchmarkDataset, ThreatModel


def zoo_entry(name: str, dataset: str, threat_model: str) -> dict:
    """The zoo's entry for a model: its constructor ('model'), checkpoint ids and ImageNet preprocessing."""
    import difflib

    model_dicts, BenchmarkDataset, ThreatModel = model_zoo()
    models = model_dicts[BenchmarkDataset(dataset)].get(ThreatModel(threat_model))
    if not models:
        raise DeepprobeError(f"RobustBench has no {dataset} models for threat model {threat_model}")
    if name not in models:
        close = difflib.get_close_matches(name, list(models), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f" ({len(models)} names, e.g. {next(iter(models))})"
        raise DeepprobeError(f"RobustBench has no model {name!r} for {dataset} {threat_model}{hint}")
    return models[name]


def checkpoint_path(name: str, dataset: str, threat_model: str, weights: str | Path | None) -> Path:
    """--weights FILE as it is; --weights DIR (or ./models without it) in RobustBench's layout."""
    if weights is not None and Path(weights).expanduser().is_file():
        return Path(weights).expanduser()
    root = Path(weights).expanduser() if weights is not None else Path(MODEL_DIR)
    path = root / dataset / threat_model / f"{name}.pt"
    if not path.is_file():
        raise DeepprobeError(
            f"no checkpoint for robustbench:{name} ({dataset}, {threat_model}): looked for {path} (RobustBench's "
            f"<model_dir>/<dataset>/<threat model>/<NAME>.pt; deepprobe never downloads it: robustbench.utils."
            f"load_model('{name}', model_dir='{root}', dataset='{dataset}', threat_model='{threat_model}') fetches "
            f"it where there is network); or give --weights FILE, or --weights DIR for another model_dir")
    return path


def load_robustbench(rest: str, weights, dataset: str | None = None, threat_model: str | None = None,
                     random_init: bool = False):
    """(net, labels, preprocess, canonical spec, checkpoint read or None) for `robustbench:NAME` (random_init: the
    architecture alone)."""
    ds, tm, name = parse(rest, dataset, threat_model)
    entry = zoo_entry(name, ds, tm)
    if isinstance(entry.get("gdrive_id"), list):
        raise DeepprobeError(f"robustbench:{name} is an ensemble of {len(entry['gdrive_id'])} checkpoints "
                             "(NAME.pt_m0.pt, ...); deepprobe reads single-checkpoint models only")
    if ds == "imagenet" and name.startswith("Standard"):
        raise DeepprobeError(f"robustbench:{name} is torchvision's pretrained network, not a RobustBench "
                             "checkpoint: use --model torchvision:NAME --weights FILE")
    net = _build(entry, name)
    path = None if random_init else checkpoint_path(name, ds, tm, weights)
    if path is not None:
        _load(net, _state_dict(path, name, ds), path.name)
    labels = {"cifar10": CIFAR10_LABELS, "cifar100": CIFAR100_LABELS}.get(ds) or imagenet_labels()
    return net, list(labels), _preprocess(ds, entry), f"robustbench:{ds}/{tm}/{name}", path


@contextlib.contextmanager
def _pretrained_off():
    """Build zoo networks that pass pretrained=True to timm (their weights come from the checkpoint instead)."""
    import timm

    create = timm.create_model

    def offline(*args, **kwargs):
        kwargs["pretrained"] = False
        return create(*args, **kwargs)

    timm.create_model = offline
    try:
        yield
    finally:
        timm.create_model = create


def _build(entry: dict, name: str) -> nn.Module:
    try:
        with _pretrained_off():
            return entry["model"]()
    except Exception as exc:  # noqa: BLE001 - a zoo constructor that cannot run here: one line
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DeepprobeError(f"cannot build robustbench:{name}'s architecture: {first}") from exc


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items()}


def _state_dict(path: Path, name: str, dataset: str) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors as RobustBench's load_model arranges them, read with weights_only=True."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything here means "not a checkpoint we can read"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DeepprobeError(f"cannot read checkpoint {path.name}: {first}") from exc
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("last"), Mapping):
        checkpoint = checkpoint["last"]  # Kireev2021Effectiveness*, Andriushchenko2020Understanding: last epoch
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise DeepprobeError(f"{path.name} is not a RobustBench checkpoint (a state_dict of tensors, maybe under "
                             "'state_dict')")
    state = _strip(_strip(checkpoint, "module."), "model.")
    wraps = dataset == "imagenet" and not name.startswith(("Singh2023Revisiting", "Peng2023Robust", "Chen2024Data",
                                                           "Xu2024MIMIR"))
    return {f"model.{k}": v for k, v in state.items()} if wraps else state


def _load(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict, except for the normalization constants some architectures set themselves (as RobustBench)."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    if missing and all(k in CONSTANT_KEYS or k.endswith(tuple("." + c for c in CONSTANT_KEYS)) for k in missing):
        state = {**state, **{k: own[k] for k in missing}}
    fit_state_dict(net, state, source)


def _preprocess(dataset: str, entry: dict) -> Preprocess:
    zero, one = (0.0,) * 3, (1.0,) * 3  # RobustBench feeds [0,1] images; a model normalizes inside, if at all
    if dataset != "imagenet":
        return Preprocess(crop=(32, 32), resize=32, mean=zero, std=one, interpolation="bilinear")
    resize, crop, interpolation = IMAGENET_GEOMETRY.get(entry.get("preprocessing"), IMAGENET_GEOMETRY[None])
    return Preprocess(crop=(crop, crop), resize=resize, mean=zero, std=one, interpolation=interpolation)
