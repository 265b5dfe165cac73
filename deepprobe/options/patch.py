"""Defaults of `deepprobe patch train|apply` and of `deepprobe.train_patch` / `apply_patch` (Brown et al. 2017).

`size` is the patch side as a fraction of the image's shorter side (0.3 covers 9% of the area).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Options:
    target: str | None = None  # class the patch should make the model see (train: required)
    size: float = 0.3  # patch side as a fraction of the image's shorter side
    steps: int = 200  # Adam steps (one batch of randomly placed patches per step)
    lr: float = 0.05  # Adam step on the patch pixels
    batch_size: int = 8  # training images per step, each with its own random placement/scale/rotation
    scale_min: float = 0.8  # random scale of the patch while training, relative to `size`
    scale_max: float = 1.2
    rotation: float = 20.0  # random rotation while training, +- degrees
    preview: int = 4  # patched training images shown in the preview panel
