"""Defaults of `deepprobe fool --from-noise` and of `deepprobe.fool_from_noise` (Nguyen et al., CVPR 2015)."""
from __future__ import annotations

from dataclasses import dataclass

METHODS = ("evolve", "cppn", "gradient")

# Generations (evolve/cppn) or optimizer steps (gradient) used when --steps is not given.
DEFAULT_STEPS = {"evolve": 150, "cppn": 150, "gradient": 200}


@dataclass
class Options:
    method: str = "evolve"  # evolve (direct pixel encoding) | cppn (indirect encoding) | gradient (gradient ascent)
    steps: int | None = None  # generations (evolve/cppn) or gradient steps; None: DEFAULT_STEPS[method]
    population: int = 16  # evolve/cppn: individuals per target (each generation evaluates them as one batch)
    elite: int = 4  # evolve/cppn: best individuals kept unchanged each generation (mu of a (mu+lambda) search)
    resolution: int = 32  # evolve: side of the evolved pixel grid, upsampled to the model input (direct encoding)
    mutation_rate: float = 0.1  # evolve: fraction of genes mutated per child
    mutation_scale: float = 0.3  # evolve: std of a gene's Gaussian mutation ([0,1] pixel units)
    lr: float = 0.05  # Adam step of the gradient method
    confidence: float = 0.99  # stop once the target reaches this probability on the 8-bit image
    refine_steps: int = 100  # evolve/cppn: signed-gradient steps to finish an image evolution left short (0: never)
    refine_eps: float = 16 / 255  # evolve/cppn: L-inf budget of that finishing perturbation (the image keeps its look)


RANGES = {
    "steps": "[1, inf)", "population": "[2, inf)", "elite": "[1, inf)", "resolution": "[2, inf)",
    "mutation_rate": "(0, 1]", "mutation_scale": "(0, inf)", "lr": "(0, inf)", "confidence": "(0, 1)",
    "refine_steps": "[0, inf)", "refine_eps": "(0, 1]",
}


def related_ranges(values: dict) -> dict[str, tuple[str, str]]:
    """The evolutionary methods keep `elite` of `population` each generation: at least one must be new."""
    if values["method"] == "gradient":
        return {}
    return {"elite": (f"[1, {values['population'] - 1}]", f"(below population {values['population']})")}


def steps_for(method: str, steps: int | None) -> int:
    return DEFAULT_STEPS[method] if steps is None else int(steps)
