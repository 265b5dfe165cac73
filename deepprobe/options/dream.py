"""Defaults of `deepprobe dream` and of `deepprobe.dream` (one copy, shared by the CLI, the API and recipes).

Tuned on the bundled EfficientNet-Lite0 and the example photos (about 400 px): blocks.4 (stride 16) grows the
classic eyes, dog faces and fur; blocks.3 ripples and scales; blocks.5 gives larger parts but needs more steps
or bigger photos. The step (0.01 per pixel after the gradient is divided by its mean magnitude) with 4 octaves
of 10 steps draws the patterns clearly while the photo's layout stays readable; blurring the gradient a little
(sigma 1 px) turns the net's high-frequency gradient into smooth dream strokes instead of coloured grain.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_LAYERS = ("blocks.4",)
MIN_TILE = 64  # smaller tiles would be mostly padding for the deeper layers


@dataclass
class Options:
    layer: list[str] = field(default_factory=lambda: list(DEFAULT_LAYERS))  # layers whose activation norm is amplified
    target: str | None = None  # class name or index: a guided dream drives this logit instead of the layer norm
    octaves: int = 4  # image scales, processed small to large; the detail found at one scale is carried up
    octave_scale: float = 1.4  # size ratio between successive octaves
    steps: int = 10  # gradient steps per octave
    lr: float = 0.01  # step per pixel in [0,1] units; the gradient is divided by its mean magnitude first
    strength: float = 1.0  # how much of the dreamed change is laid over the photo (0 = photo, 1 = full dream)
    jitter: int = 32  # random roll (pixels) before each step, undone after it
    smooth: float = 1.0  # Gaussian blur (sigma, pixels) of each step's gradient; 0 = off
    tv: float = 0.0  # weight of a total-variation prior (beta = 2); each layer's term starts at -1, so 1-10 is mild
    tile: int = 512  # gradients are computed on tiles at most this size (0 = never tile): memory stays flat


RANGES = {
    "octaves": "[1, inf)", "octave_scale": "(1, inf)", "steps": "[1, inf)", "lr": "(0, inf)", "strength": "[0, 1]",
    "jitter": "[0, inf)", "smooth": "[0, inf)", "tv": "[0, inf)", "tile": "[0, inf)",
}


def related_ranges(values: dict) -> dict[str, tuple[str, str]]:
    """A tile smaller than MIN_TILE would be mostly padding: 0 (never tile) or at least MIN_TILE."""
    return {"tile": (f"[{MIN_TILE}, inf)", "(or 0: never tile)")} if values["tile"] != 0 else {}
