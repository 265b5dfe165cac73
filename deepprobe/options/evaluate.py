"""Defaults of `deepprobe evaluate` and of `deepprobe.evaluate` (one copy, shared by the CLI, the API and recipes).

Deletion and insertion follow RISE (Petsiuk et al. 2018) as its code does it: deleted pixels become zero *after*
the model's normalization, i.e. the normalization's mean colour (grey 0.5 for EfficientNet-Lite), and inserted
pixels are laid over a blurred copy of the photo (insertion starts from the photo's colours without detail).
20 steps of 5% of the pixels each keep a curve smooth enough for its area while a photo costs only
(maps x 2 curves x 21) forward passes. The sanity check (Adebayo et al. 2018) re-initializes layer groups from
the logits down and compares each new map with the original by Spearman rank correlation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_METHODS = ("gradcam",)
FILLS = ("mean", "black", "grey", "blur")
BLUR_SIGMA = 5.0  # RISE's insertion canvas: Gaussian blur, sigma 5 px at 224 px
EDGE_SIGMA = 2.0  # the edge baseline: Sobel magnitude of the grey image, blurred a little so edges are regions
# The random baseline is as smooth as a CAM (uniform noise on a grid of 32-px cells, bilinearly upsampled), so it
# differs from the maps it is compared with in *where* it puts mass, not in how scattered the deleted pixels are:
# per-pixel noise (cell 1) deletes salt-and-pepper pixels, which break a CNN faster than removing any region does.
RANDOM_CELL = 32


@dataclass
class Options:
    method: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))  # explanation methods to evaluate
    target: str | None = None  # class name or index; default: each photo's predicted class
    layer: str | None = None  # layer for CAM methods; default: the last spatial layer
    steps: int = 20  # deletion/insertion steps; each step removes or adds 1/steps of the pixels
    batch_size: int = 32  # images per forward pass (perturbed copies of all photos and steps share batches)
    deletion_fill: str = "mean"  # what a deleted pixel becomes: mean (normalization mean colour) | black | grey | blur
    insertion_fill: str = "blur"  # the canvas pixels are inserted into: mean | black | grey | blur
    random_cell: int = RANDOM_CELL  # cell size (px) of the random baseline map; 1 = one random value per pixel
    curves: bool = True  # deletion and insertion curves (faithfulness)
    sanity: bool = True  # cascading model-parameter randomization (sanity)


RANGES = {"steps": "[1, inf)", "batch_size": "[1, inf)", "random_cell": "[1, inf)"}
