"""Defaults of `deepprobe invert` and of `deepprobe.invert` (one copy, shared by the CLI, the API and recipes).

Mahendran & Vedaldi (CVPR 2015): from random noise, minimize
    ||phi(x) - phi0||^2 / ||phi0||^2 + alpha_weight * R_alpha(x) + tv * R_TV(x)
with the paper's normalization carried over to [0,1] pixels centred at 0.5: the paper subtracts the mean image
and uses B = 80 (of 255) as the typical pixel deviation and V = B / 6.5 as the typical neighbour difference, so
    R_alpha = mean(|x - 0.5|^alpha) / B^alpha,  R_TV = mean((dx^2 + dy^2)^(beta/2)) / V^beta,  B = 80/255
(means over pixels and channels, which is the paper's 1/(HW) factor). Both terms are then O(1) on a natural
photo (at 224 px the example photos give R_alpha ~ 0.5 and R_TV ~ 1-2), so their weights read as how much
of the photo's own contrast and roughness the prior costs against the feature error.

Tuned on the bundled EfficientNet-Lite0 and the five example photos at 224 px. The image is a pyramid of
pixel grids (deepprobe/techniques/invert_params.py): Adam moves coarse structure as fast as fine detail, which
halves the steps plain pixels need (at 128 px, blocks.3: 0.09 vs 0.13 after 400 steps on the coffee photo;
plain pixels also fall into grainy minima, 0.49 on the rocket). Adam with a cosine-decaying step (0.05 -> 0.0005
per level) beat L-BFGS and a fixed step for the same time. The priors speed convergence up too (without them
the noise turns into high-frequency grain), but an alpha weight of 0.01 greys out white and black regions (the
cup in coffee.jpg: 0.12 vs 0.09), hence 0.001; the clamp to [0,1] already bounds the range. tv 0.01 keeps
shallow layers near-photographic and deep ones readable. 800 steps bring blocks.3 (stride 16) under a relative
error of 0.1 on four of the five photos (about 25 s per layer at 224 px on 2 CPU cores); the night sky of
rocket.jpg, which the features barely constrain, stays near 0.14. The invert-conv-stack recipe shows the
paper's figure with a little more TV for the deep layers. The paper's alpha = 6 and beta = 2 are kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_LAYERS = ("blocks.3",)
PIXEL_SCALE = 80 / 255  # B: the paper's typical pixel deviation (80 of 255), in [0,1] units
TV_SCALE = PIXEL_SCALE / 6.5  # V: the paper's typical difference between neighbouring pixels
LR_FLOOR = 0.01  # the cosine schedule ends at this fraction of --lr


@dataclass
class Options:
    layer: list[str] = field(default_factory=lambda: list(DEFAULT_LAYERS))  # layers to invert (shallow to deep)
    steps: int = 800  # Adam steps
    lr: float = 0.05  # first Adam step (pixel units, per pyramid level); decays along a cosine to 1% of it
    tv: float = 0.01  # lambda_TV: weight of the total-variation prior R_TV (see the module docstring)
    beta: float = 2.0  # TV exponent (the paper's beta; 2 avoids spikes)
    alpha_weight: float = 0.001  # lambda_alpha: weight of the alpha-norm prior R_alpha
    alpha: float = 6.0  # exponent of the alpha-norm prior (the paper's alpha)
    noise: float = 0.1  # the start: uniform noise of this half-width around mid-grey
    levels: int = 6  # pyramid levels of the image (each half the size; coarsest >= 4 px); 1 = plain pixels
    size: int | None = None  # longest side of the working image; None: the model's input size (224 for lite0)
    batch_size: int = 8  # most images x layers optimized together in one batch (more are split, results unchanged)


RANGES = {
    "steps": "[1, inf)", "lr": "(0, inf)", "tv": "[0, inf)", "beta": "(0, inf)", "alpha_weight": "[0, inf)",
    "alpha": "(0, inf)", "noise": "[0, 0.5]", "levels": "[1, inf)", "size": "[8, inf)", "batch_size": "[1, inf)",
}
