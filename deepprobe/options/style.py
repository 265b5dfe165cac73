"""Defaults of `deepprobe style` and of `deepprobe.style` (one copy, shared by the CLI, the API and recipes).

Tuned for the bundled EfficientNet-Lite models (no VGG weights exist offline): style Grams on the stem
convolution (colour and fine edges) and the block outputs from stride 2 down to stride 16 (EfficientNet's block
outputs are linear bottlenecks, i.e. pre-activation features, which carry texture statistics well), content on
blocks.3 (stride 16), each style layer's loss divided by the style Gram's own energy so every layer counts the
same, and ReLU6 swapped for a smooth clamp while optimizing so gradients do not die where it saturates.
Style 10 : content 1 paints the style's colours and strokes all over the photo while faces stay readable
(the style-soft and style-strong recipes move that balance); L-BFGS gets there in about 60 steps at 256 px.
"""
from __future__ import annotations

from dataclasses import dataclass, field

STYLE_LAYERS = ("conv_stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4")
CONTENT_LAYER = "blocks.3"
# The judge: a different network reads the result. Its layers are these fixed EfficientNet-Lite names (any
# bundled Lite model has them), whatever layers the optimization used.
MEASURE_MODEL = "efficientnet_lite2"
MEASURE_FALLBACK = "efficientnet_lite0"  # the judge when the optimizing model is lite2 itself
MEASURE_STYLE_LAYERS = ("blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4")
MEASURE_CONTENT_LAYER = "blocks.3"
INITS = ("content", "noise")
OPTIMIZERS = ("lbfgs", "adam")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}


@dataclass
class Options:
    style_layers: list[str] = field(default_factory=lambda: list(STYLE_LAYERS))  # Gram losses, early to deep
    content_layer: str = CONTENT_LAYER  # feature-match loss keeps the content's layout
    style_weight: float = 10.0  # weight of the style loss (mean over layers of relative Gram errors)
    content_weight: float = 1.0  # weight of the content loss (relative feature error)
    tv: float = 1.0  # weight of the total-variation prior (pixel units, beta = 2)
    size: int = 256  # longest side of the result, in pixels (any aspect ratio)
    init: str = "content"  # content | noise: where the optimization starts
    optimizer: str = "lbfgs"  # lbfgs (converges fastest) | adam (memory-light)
    steps: int = 80
    lr: float | None = None  # None: 1.0 for lbfgs, 0.02 for adam
    style_blend: str | None = None  # weights of several style images, e.g. "0.7,0.3" (normalized); None = equal
    preserve_colors: bool = False  # transfer luminance only and keep the content's colours (YIQ chroma)
    smooth: bool = True  # optimize through a smooth ReLU6 (softplus-clamped) so gradients do not die
    measure_model: str | None = None  # judging network; None: lite2 (lite0 when optimizing with lite2); "none": skip


RANGES = {
    "style_weight": "[0, inf)", "content_weight": "[0, inf)", "tv": "[0, inf)", "size": "[32, inf)",
    "steps": "[1, inf)", "lr": "(0, inf)",
}


def lr_for(optimizer: str, lr: float | None) -> float:
    return DEFAULT_LR[optimizer] if lr is None else float(lr)


def measure_model_for(model_spec: str, measure_model: str | None) -> str | None:
    """The judge's spec: a network other than the one optimizing, unless the user names one ("none": skip)."""
    if measure_model is not None:
        return None if measure_model.strip().lower() == "none" else measure_model
    return MEASURE_FALLBACK if model_spec.strip() == MEASURE_MODEL else MEASURE_MODEL
