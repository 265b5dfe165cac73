"""Defaults of `deepprobe classify`."""
from dataclasses import dataclass


@dataclass
class Options:
    top: int = 5  # how many classes to report per image
    batch_size: int = 16  # images per forward pass


RANGES = {"top": "[1, inf)", "batch_size": "[1, inf)"}
