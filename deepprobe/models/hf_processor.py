"""What a save_pretrained folder holds, read offline: the model (one clear line when it cannot be loaded) and what
its image processor says about preprocessing (shared by the hf:DIR loaders: image classifiers, CLIP, DETR,
embedders, Segment Anything, Depth Anything)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import DeepprobeError
from .preprocess import Preprocess

# PIL resample codes in preprocessor configs -> torchvision interpolation names
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def load_saved(loader, folder: Path, failure: str, errors: tuple[type[BaseException], ...] = (OSError, ValueError,
                                                                                           RuntimeError), **kwargs):
    """`loader.from_pretrained(folder)` with local files only; a failure is one line, `failure: <first line>`."""
    try:
        return loader.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except errors as exc:
        text = str(exc).strip()
        raise DeepprobeError(f"{failure}: {(text.splitlines()[0] if text else type(exc).__name__)[:200]}") from exc


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
