"""Defaults of `deepprobe classify`."""
from dataclasses import dataclass


@dataclass
class Options:
    top: int = 5  # how many classes to report per image
    batch_size: int = 16  # images per forward pass
    min_score: float = 0.5  # detectors: boxes at or above this score are reported and drawn
    alpha: float = 0.5  # segmenters: opacity of the class colours over the photo
    neighbors: int = 20  # embedders with --gallery: the k of DINO's k-NN vote (Caron et al. 2021)
    temperature: float = 0.07  # embedders: each neighbour votes with weight exp(cosine / T), as in DINO


RANGES = {"top": "[1, inf)", "batch_size": "[1, inf)", "min_score": "[0, 1]", "alpha": "[0, 1]",
          "neighbors": "[1, inf)", "temperature": "(0, inf)"}
