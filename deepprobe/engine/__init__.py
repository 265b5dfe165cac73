"""The gradient-optimization engine: parameterizations x objectives x transforms -> optimize()."""
from .capture import Forward, forward, gram
from .loop import OPTIMIZERS, OptimResult, cosine_decay, evaluate, optimize
from .objectives import (Objective, channel, class_logit, class_probability, cross_entropy, feature_match,
                         gram_match, l2_to, layer_norm, lp_norm, neuron, regression, rowwise, total_variation)
from .params import Basis, FourierImage, Parameterization, Perturbation, Pixels
from .transforms import compose, jitter, pad, random_rotate, random_scale, standard_robustness

__all__ = [
    "Forward", "forward", "gram", "OPTIMIZERS", "OptimResult", "cosine_decay", "evaluate", "optimize",
    "Objective", "channel", "class_logit", "class_probability", "cross_entropy", "feature_match", "gram_match",
    "l2_to", "layer_norm", "lp_norm", "neuron", "regression", "rowwise", "total_variation",
    "Basis", "FourierImage", "Parameterization", "Perturbation", "Pixels",
    "compose", "jitter", "pad", "random_rotate", "random_scale", "standard_robustness",
]
