"""Defaults of `deepprobe evaluate` and of `deepprobe.evaluate` (one copy, shared by the CLI, the API and recipes).

Deletion and insertion follow RISE (Petsiuk et al. 2018) as its code does it: deleted pixels become zero *after*
the model's normalization, i.e. the normalization's mean colour (grey 0.5 for EfficientNet-Lite), and inserted
pixels are laid over a blurred copy of the photo (insertion starts from the photo's colours without detail).
20 steps of 5% of the pixels each keep a curve smooth enough for its area while a photo costs only
(maps x 2 curves x 21) forward passes. The sanity check (Adebayo et al. 2018) re-initializes layer groups from
the logits down and compares each new map with the original by Spearman rank correlation.
The other metrics are Quantus 0.6's (class named in METRICS) with its defaults, except pixel-flipping's step
(Quantus: one feature per step, 150,528 forward passes per 224-px photo; here 1% of the pixels per step).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..distributed import DEFAULT_RANK_TIMEOUT

DEFAULT_METHODS = ("gradcam",)
FILLS = ("mean", "black", "grey", "blur")
PERTURB_BASELINES = ("black", "white", "mean")  # Quantus's perturb_baseline: the image's min, max or mean value
BLUR_SIGMA = 5.0  # RISE's insertion canvas: Gaussian blur, sigma 5 px at 224 px
EDGE_SIGMA = 2.0  # the edge baseline: Sobel magnitude of the grey image, blurred a little so edges are regions
# The random baseline is as smooth as a CAM (uniform noise on a grid of 32-px cells, bilinearly upsampled), so it
# differs from the maps it is compared with in *where* it puts mass, not in how scattered the deleted pixels are:
# per-pixel noise (cell 1) deletes salt-and-pepper pixels, which break a CNN faster than removing any region does.
RANDOM_CELL = 32
# On a CPU small forward batches stay in cache: Lite0 at 192 px ran ~2x faster per image in batches of 4-5 than
# of 32 on the 2-core VM (benchmarks/README.md), so the perturbation loops send at most this many images at once.
CPU_FORWARD_BATCH = 4

# name -> (family, higher is better, the Quantus 0.6 class it follows, what it needs beyond the maps)
# needs: "model" (perturbed forward passes), "explainer" (maps recomputed), "masks" (a binary mask per image)
METRICS: dict[str, tuple[str, bool, str, str]] = {
    "deletion": ("faithfulness", False, "- (RISE, Petsiuk et al. 2018)", "model"),
    "insertion": ("faithfulness", True, "- (RISE, Petsiuk et al. 2018)", "model"),
    "pixel-flipping": ("faithfulness", False, "PixelFlipping", "model"),
    "region-perturbation": ("faithfulness", True, "RegionPerturbation", "model"),
    "faithfulness-correlation": ("faithfulness", True, "FaithfulnessCorrelation", "model"),
    "road": ("faithfulness", True, "ROAD", "model"),
    "infidelity": ("faithfulness", False, "Infidelity", "model"),
    "max-sensitivity": ("robustness", False, "MaxSensitivity", "explainer"),
    "local-lipschitz": ("robustness", False, "LocalLipschitzEstimate", "explainer"),
    "sanity": ("randomisation", False, "MPRT (cascading, layer groups)", "explainer"),
    "random-logit": ("randomisation", False, "RandomLogit", "explainer"),
    "sparseness": ("complexity", True, "Sparseness", ""),
    "complexity": ("complexity", False, "Complexity", ""),
    "pointing-game": ("localisation", True, "PointingGame", "masks"),
    "relevance-mass": ("localisation", True, "RelevanceMassAccuracy", "masks"),
    "relevance-rank": ("localisation", True, "RelevanceRankAccuracy", "masks"),
}
# Without --metric: a bit of every family that costs at most ~100 forward passes per map (road, infidelity and
# the robustness metrics need thousands: ask for them, or `--metric all`); localisation joins when masks are given.
DEFAULT_METRICS = ("deletion", "insertion", "pixel-flipping", "region-perturbation", "faithfulness-correlation",
                   "random-logit", "sanity", "sparseness", "complexity")
MASK_METRICS = tuple(name for name, spec in METRICS.items() if spec[3] == "masks")
ROAD_PERCENTAGES = tuple(float(p) for p in range(1, 100, 2))


@dataclass
class Options:
    method: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))  # explanation methods to evaluate
    metric: list[str] = field(default_factory=list)  # metrics (names of METRICS, or "all"); empty: DEFAULT_METRICS
    target: str | None = None  # class name or index, or "label" (DATA: each image's own label); default: predicted
    layer: str | None = None  # layer for CAM methods; default: the last spatial layer
    masks: str | None = None  # folder of binary masks, one per image with the same file stem (localisation)
    baselines: bool = True  # also score a random map and an edge map, as references
    steps: int = 20  # deletion/insertion steps; each step removes or adds 1/steps of the pixels
    batch_size: int = 32  # images per chunk (and per forward pass on a GPU)
    forward_batch: int | None = None  # images per forward pass; default: batch_size on a GPU, CPU_FORWARD_BATCH on a CPU
    deletion_fill: str = "mean"  # what a deleted pixel becomes: mean (normalization mean colour) | black | grey | blur
    insertion_fill: str = "blur"  # the canvas pixels are inserted into: mean | black | grey | blur
    random_cell: int = RANDOM_CELL  # cell size (px) of the random baseline map; 1 = one random value per pixel
    curves: bool = True  # deletion and insertion (off: leave them out of the metrics)
    sanity: bool = True  # cascading model-parameter randomization (off: leave it out of the metrics)
    perturb_baseline: str = "black"  # Quantus metrics: what a removed feature becomes (image min | max | mean)
    features_in_step: int | None = None  # pixel-flipping features per step; default: 1% of the pixels (x channels)
    patch_size: int = 8  # region-perturbation patch side (px)
    regions: int = 100  # region-perturbation: patches removed (curve length)
    correlation_runs: int = 100  # faithfulness-correlation: random subsets
    subset_size: int = 224  # faithfulness-correlation: features per subset
    road_percentages: list[float] = field(default_factory=lambda: list(ROAD_PERCENTAGES))  # % of pixels removed
    road_noise: float = 0.01  # ROAD: std of the noise added to imputed pixels
    infidelity_patches: list[int] = field(default_factory=lambda: [4])  # infidelity patch sides (px)
    sensitivity_samples: int = 200  # max-sensitivity: noisy copies per image
    sensitivity_radius: float = 0.2  # max-sensitivity: uniform noise in [-r, r] on [0,1] pixels
    lipschitz_samples: int = 200  # local-lipschitz: noisy copies per image
    lipschitz_std: float = 0.1  # local-lipschitz: Gaussian noise std on [0,1] pixels
    limit: int | None = None  # DATA: only the first N images (after --sample)
    sample: int | None = None  # DATA: a fixed random subset of N images, chosen with --seed
    workers: int = 0  # DATA: DataLoader processes reading images ahead
    rank_timeout: float = DEFAULT_RANK_TIMEOUT  # torchrun: seconds without progress from a rank before the run ends


LABEL_TARGET = "label"  # --target label: explain each image's labelled class (class folders, manifests)
FLAGS = {"road_percentages": "--road-percentage", "infidelity_patches": "--infidelity-patch"}  # repeatable flags
RANGES = {
    "steps": "[1, inf)",
    "batch_size": "[1, inf)",
    "forward_batch": "[1, inf)",
    "random_cell": "[1, inf)",
    "features_in_step": "[1, inf)",
    "patch_size": "[1, inf)",
    "regions": "[1, inf)",
    "correlation_runs": "[2, inf)",
    "subset_size": "[1, inf)",
    "road_percentages": "(0, 100)",
    "road_noise": "[0, inf)",
    "infidelity_patches": "[1, inf)",
    "sensitivity_samples": "[1, inf)",
    "sensitivity_radius": "(0, inf)",
    "lipschitz_samples": "[1, inf)",
    "lipschitz_std": "(0, inf)",
    "limit": "[1, inf)",
    "sample": "[1, inf)",
    "workers": "[0, inf)",
    "rank_timeout": "(0, inf)",
}
