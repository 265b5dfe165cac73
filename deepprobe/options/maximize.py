"""Defaults of `deepprobe maximize` and of `deepprobe.maximize` (one copy, shared by the CLI, the API and recipes).

As lucent's `render_vis`: a Fourier-parameterized image with decorrelated colour and a sigmoid, lucent's standard
robustness transforms (pad 12, jitter 8, scale 0.9-1.1, rotate +-10 degrees, jitter 4) and Adam at lr 0.05.
On the bundled EfficientNet-Lite0 at 224 px, 256 steps draw clear parts for a class (heads, eyes, feathers)
and repeated textures for a channel, in about 22 s per unit on one CPU thread; units in one run share the batch.
The transforms' pixel sizes are lucent's for a 224-px network; a network with a smaller input (a 32-px CIFAR
model) gets them scaled down in proportion, so a jitter moves its objects as far as it moves an ImageNet model's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

NEURON_CENTRE = ("centre", "center", "c")  # --neuron centre: the middle cell of the layer's map


@dataclass
class Options:
    target: list[str] = field(default_factory=list)  # class names or indices; each drives its logit
    layer: str | None = None  # the layer whose channels --channel picks (see `deepprobe layers`)
    channel: list[str] = field(default_factory=list)  # channel indices or ranges, e.g. 12, 0-7
    neuron: str | None = None  # "Y,X" cell of the layer's map (at --size), or "centre"; None = the channel mean
    steps: int = 256  # Adam steps
    lr: float = 0.05  # Adam learning rate on the Fourier coefficients (lucent's default)
    size: int | None = None  # side of the square result, in pixels; None: the model's input size (224 for lite0)
    decay_power: float = 1.0  # Fourier coefficients scaled by 1/f^decay: higher = smoother, lower = finer
    robustness: float = 1.0  # strength of the random pad/jitter/scale/rotate per step (0 = off)
    photos: str = "examples"  # photos whose best activation of each unit is reported beside the result; "none"
    columns: int = 0  # grid columns (0: up to 8 in a row)


RANGES = {
    "steps": "[1, inf)", "lr": "(0, inf)", "size": "[8, inf)", "decay_power": "[0, inf)", "robustness": "[0, inf)",
    "columns": "[0, inf)",
}
