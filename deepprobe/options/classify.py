"""Defaults of `deepprobe classify`."""
from dataclasses import dataclass


@dataclass
class Options:
    top: int = 5  # how many classes to report per image
    batch_size: int = 16  # images per forward pass
    min_score: float = 0.5  # detectors: boxes at or above this score are reported and drawn
    alpha: float = 0.5  # segmenters: opacity of the class colours over the photo


RANGES = {"top": "[1, inf)", "batch_size": "[1, inf)", "min_score": "[0, 1]", "alpha": "[0, 1]"}
