"""`hf:DIR`: a Hugging Face model saved with save_pretrained, recognised by its config.

CLIP (`model_type` clip) becomes a zero-shot classifier over text prompts (models/clip.py), DETR (detr) a
detector (models/detr.py), SAM (sam) a promptable segmenter (models/sam.py), Depth Anything (depth_anything)
a depth estimator (models/depth_anything.py), a vision tower or backbone (`Dinov2Model`, `ViTModel`,
`CLIPVisionModel`, `SiglipVisionModel`...) an embedder (models/embedding.py), anything else an image classifier.
Nothing is downloaded: every load passes local_files_only=True, and attention runs on the eager path so
explainers can read it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import DeepprobeError
from .hf_processor import image_preprocess
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, LogitsOf

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+(@[\w./-]+)?$")


def looks_like_hub_id(text: str) -> bool:
    """ORG/NAME (optionally @REVISION), as the hub names models; a path that exists is a folder instead."""
    return bool(_HUB_ID.match(text)) and not text.startswith((".", "/"))


def load_hf(path: str):
    """(network, labels, Preprocess) for a save_pretrained folder."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        hub = " or a Hugging Face hub id (ORG/NAME)" if not looks_like_hub_id(path) else ""
        raise DeepprobeError(f"{path} is not a saved Hugging Face model folder (no config.json){hub}")
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise DeepprobeError("hf: models need transformers: pip install 'deepprobe[hf]'") from exc
    try:
        config = json.loads((folder / "config.json").read_text())
        kind = config.get("model_type")
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
        if kind == "sam":
            from .sam import load_sam

            return load_sam(folder)
        if kind == "depth_anything":
            from .depth_anything import load_depth_anything

            return load_depth_anything(folder)
        from .embedding import is_hf_embedder, load_hf_embedder

        if is_hf_embedder(config):
            return load_hf_embedder(folder, config)
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
