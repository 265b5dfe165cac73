"""`hf:DIR`: a Hugging Face model saved with save_pretrained, recognised by its config.

CLIP (`model_type` clip) becomes a zero-shot classifier over text prompts (models/clip.py), DETR (detr) a
detector (models/detr.py), anything else an image classifier. Nothing is downloaded: every load passes
local_files_only=True, and attention runs on the eager path so explainers can read it.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import DeepprobeError
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, LogitsOf, Preprocess

# PIL resample codes in preprocessor configs -> torchvision interpolation names
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def load_hf(path: str):
    """(network, labels, Preprocess) for a save_pretrained folder."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise DeepprobeError(f"{path} is not a saved Hugging Face model folder (no config.json)")
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise DeepprobeError("hf: models need transformers: pip install 'deepprobe[hf]'") from exc
    try:
        kind = json.loads((folder / "config.json").read_text()).get("model_type")
    except (json.JSONDecodeError, OSError) as exc:
        raise DeepprobeError(f"cannot read {folder / 'config.json'}: {exc}") from exc
    from transformers.utils import logging

    logging.disable_progress_bar()  # "Loading weights" bars would mix with our own output
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # advice meant for model authors (e.g. eager attention and timm backbones)
    try:
        if kind == "clip":
            from .clip import load_clip

            return load_clip(folder)
        if kind == "detr":
            from .detr import load_detr

            return load_detr(folder)
        return _classifier(folder)
    finally:
        logging.set_verbosity(verbosity)


def _classifier(folder: Path):
    from transformers import AutoModelForImageClassification

    net = AutoModelForImageClassification.from_pretrained(str(folder), local_files_only=True,
                                                          attn_implementation="eager")
    id2label = getattr(net.config, "id2label", None) or {}
    labels = [id2label[i] for i in range(len(id2label))] if id2label else None
    size = getattr(net.config, "image_size", 224)
    return LogitsOf(net), labels, image_preprocess(folder, size, IMAGENET_MEAN, IMAGENET_STD, "bilinear")


def processor_config(folder: Path) -> dict:
    """The image processor's settings: preprocessor_config.json, or the image_processor entry of the
    processor_config.json that transformers 5 writes for multi-modal processors; {} when neither exists."""
    single = folder / "preprocessor_config.json"
    if single.is_file():
        return json.loads(single.read_text())
    combined = folder / "processor_config.json"
    if combined.is_file():
        return json.loads(combined.read_text()).get("image_processor", {})
    return {}


def _pair(value, default: int) -> tuple[int, int]:
    if isinstance(value, dict):
        edge = value.get("shortest_edge", default)
        return int(value.get("height", edge)), int(value.get("width", edge))
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def image_preprocess(folder: Path, default_size, mean, std, interpolation: str = "bicubic") -> Preprocess:
    """Preprocess from the saved image processor: with a centre crop (CLIP) resize the short side, then crop;
    without one (ViT classifiers) resize straight to `size`."""
    cfg = processor_config(folder)
    size = cfg.get("size", default_size)
    mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
    interpolation = _RESAMPLE.get(cfg.get("resample"), interpolation)
    crop = cfg.get("crop_size")
    if crop is not None and cfg.get("do_center_crop", True):
        short = size.get("shortest_edge") if isinstance(size, dict) else size
        resize = int(short) if isinstance(short, int) else None
        return Preprocess(crop=_pair(crop, 224), resize=resize, mean=mean, std=std, interpolation=interpolation)
    return Preprocess(crop=_pair(size, 224), resize=None, mean=mean, std=std, interpolation=interpolation)
