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
    # detectors (Thys et al. 2019): a patch on each box of a class that hides it
    vanish: str | None = None  # class to hide (or "all"); train on a detector: required
    box_size: float = 0.45  # patch side as a fraction of each box's side (sqrt of its area)
    min_score: float = 0.5  # a box counts as detected at or above this score


RANGES = {
    "size": "(0, 1]", "steps": "[1, inf)", "lr": "(0, inf)", "batch_size": "[1, inf)", "scale_min": "(0, inf)",
    "scale_max": "(0, inf)", "rotation": "[0, 180]", "preview": "[1, inf)", "box_size": "(0, 2]",
    "min_score": "(0, 1]",
}
