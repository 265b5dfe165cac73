"""Defaults of `deepprobe age` (estimate ages; with --target, edit a face towards an age)."""
from dataclasses import dataclass


@dataclass
class Options:
    target: float | None = None  # age to edit the face towards; unset = only estimate every face's age
    steps_grid: str | None = None  # comma-separated targets, e.g. "30,50,70,90": one edit each, shown as a trajectory
    face: int | None = None  # which face to edit (0 = largest, as the table numbers them)
    faces: str | None = None  # folder of face photos: edit in their PCA basis instead of the built-in smooth basis
    components: int = 32  # PCA components kept from --faces
    frequencies: int = 32  # built-in basis: luminance DCT frequencies (radius); higher = finer edits
    chroma_frequencies: int = 2  # built-in basis: colour DCT frequencies (kept low: colour edits look fake)
    steps: int = 150  # Adam steps of the first round
    lr: float = 0.05  # Adam step on the basis coefficients
    l2_weight: float = 0.5  # distance to the original chip: keeps identity
    tv_weight: float = 2.0  # total variation of the edit: keeps it smooth
    jitter: float = 1.0  # random shift (pixels; also 2x degrees, 2x % zoom) while optimizing, so re-alignment keeps the edit
    seed: int = 0  # seeds the jitter (the CLI passes --seed)
    tolerance: float = 1.0  # years: stop once the age measured on the saved 8-bit photo is this close
    rounds: int = 3  # optimize -> save -> re-detect -> measure rounds; later rounds aim past the miss
    min_score: float = 0.3  # dlib face-detector score to count as a face (0 keeps every detection)


RANGES = {
    "target": "[0, 100]", "face": "[0, inf)", "components": "[1, inf)", "frequencies": "[1, inf)",
    "chroma_frequencies": "[0, inf)", "steps": "[1, inf)", "lr": "(0, inf)", "l2_weight": "[0, inf)",
    "tv_weight": "[0, inf)", "jitter": "[0, inf)", "seed": "(-inf, inf)", "tolerance": "[0, inf)", "rounds": "[1, inf)",
    "min_score": "(-inf, inf)",  # dlib detector scores; below 0 keeps weaker detections too
}
