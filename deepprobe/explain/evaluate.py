"""`dp.evaluate`: is an explanation faithful to the model? Deletion/insertion against baselines, and a sanity check.

Faithfulness (Petsiuk et al. 2018): each method's maps, a random map and an edge-detector map order the pixels;
the target probability is recorded as they are deleted from the photo or inserted into a blurred copy, and the
areas under the curves are compared (deletion: lower is better; insertion: higher is better). A method that
does not beat the baselines is not telling you what the model uses.
Sanity (Adebayo et al. 2018): the maps must change when the model's weights are randomized (`sanity.py`).
Everything is tensors on the probe's device; nothing touches the filesystem.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import DeepprobeError
from ..options.evaluate import FILLS, Options
from ..options.ranges import check_ranges
from . import explain
from .maps import method_function, resolve_targets
from .faithfulness import auc, deletion_insertion, edge_map, fractions, random_map
from .sanity import cascading_randomization, randomization_groups

BASELINES = ("random", "edge")


@dataclass
class EvaluateResult:
    """Per-image numbers of one evaluation; curve and AUC dicts are keyed by method name, "random" and "edge"."""

    methods: list[str]
    targets: torch.Tensor  # (N,) class indices explained
    probabilities: torch.Tensor  # (N,) the target's softmax probability on the clean photo
    fractions: torch.Tensor  # (steps+1,) fraction of pixels deleted/inserted at each curve point
    deletion: dict[str, torch.Tensor] = field(default_factory=dict)  # (N, steps+1) target probability
    insertion: dict[str, torch.Tensor] = field(default_factory=dict)
    deletion_auc: dict[str, torch.Tensor] = field(default_factory=dict)  # (N,); lower is better
    insertion_auc: dict[str, torch.Tensor] = field(default_factory=dict)  # (N,); higher is better
    sanity_layers: list[str] = field(default_factory=list)  # "none", then the groups randomized, logits first
    sanity: dict[str, torch.Tensor] = field(default_factory=dict)  # method -> (N, len(sanity_layers)) Spearman
    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # (N,H,W) in [0,1], methods and baselines
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        """Means over the images: per method (and baseline) deletion/insertion AUC and final sanity correlation."""
        out: dict[str, dict[str, float]] = {}
        for name in [*self.methods, *BASELINES]:
            row = {}
            if name in self.deletion_auc:
                row["deletion_auc"] = float(self.deletion_auc[name].mean())
                row["insertion_auc"] = float(self.insertion_auc[name].mean())
            if name in self.sanity:
                row["sanity_final_spearman"] = float(self.sanity[name][:, -1].mean())
                row["sanity_mean_spearman"] = float(self.sanity[name][:, 1:].mean()) if self.sanity[name].shape[1] > 1 \
                    else 1.0
            if row:
                out[name] = row
        return out


def evaluation_methods(method: str | Sequence[str]) -> list[str]:
    """The methods to evaluate, deduplicated; unknown names and baseline names fail with one line."""
    methods = [method] if isinstance(method, str) else list(method)
    if not methods:
        raise DeepprobeError("give at least one explanation method")
    for m in methods:
        method_function(m)  # unknown names fail here with the list of known ones
        if m in BASELINES:
            raise DeepprobeError(f"{m!r} is a baseline name, not a method")
    return list(dict.fromkeys(methods))


def check_options(deletion_fill: str, insertion_fill: str, curves: bool, sanity: bool) -> None:
    """Choices a user can get wrong, reported before any work (numbers: the RANGES of options/evaluate.py)."""
    for name, fill in (("--deletion-fill", deletion_fill), ("--insertion-fill", insertion_fill)):
        if fill not in FILLS:
            raise DeepprobeError(f"{name} must be one of {', '.join(FILLS)}, got {fill!r}")
    if not (curves or sanity):
        raise DeepprobeError("nothing to do: both the curves and the sanity check are off")


def work_per_image(probe, methods: Sequence[str], steps: int = Options.steps, curves: bool = Options.curves,
                   sanity: bool = Options.sanity) -> int:
    """Progress units one photo costs (images through the network for the curves, maps for the sanity check)."""
    units = len(methods)  # the original maps
    if curves:
        units += (len(methods) + len(BASELINES)) * 2 * (steps + 1)
    if sanity:
        units += len(methods) * (1 + len(randomization_groups(probe.inner)))
    return units


def evaluate(probe, x: torch.Tensor, method: str | Sequence[str] = Options().method[0], *, target=Options.target,
             layer: str | None = Options.layer, steps: int = Options.steps, batch_size: int = Options.batch_size,
             deletion_fill: str = Options.deletion_fill, insertion_fill: str = Options.insertion_fill,
             random_cell: int = Options.random_cell, curves: bool = Options.curves, sanity: bool = Options.sanity,
             seed: int = 0, method_options: dict[str, dict] | None = None,
             callback: Callable[[int], None] | None = None) -> EvaluateResult:
    """Deletion/insertion AUCs of each method's maps against a random and an edge map, and the cascading
    randomization sanity check, on (N,3,H,W) photos in [0,1]. `target` None explains each predicted class;
    `method_options` maps a method to its keyword options; `callback(k)` hears progress (see `work_per_image`).
    The probe's own weights are never changed (the sanity check randomizes a deep copy)."""
    check_ranges("evaluate", locals())
    methods = evaluation_methods(method)
    check_options(deletion_fill, insertion_fill, curves, sanity)
    method_options = method_options or {}
    x = x.to(probe.device).float()
    targets = resolve_targets(probe, x, target)
    probs = probe.predict(x).gather(1, targets.view(-1, 1))[:, 0]
    pixels = x.shape[-2] * x.shape[-1]
    result = EvaluateResult(methods=methods, targets=targets.cpu(), probabilities=probs.cpu(),
                            fractions=fractions(pixels, steps).float(),
                            settings=dict(steps=steps, deletion_fill=deletion_fill, insertion_fill=insertion_fill,
                                          random_cell=random_cell, seed=seed, layer=layer,
                                          fill_mean=list(probe.preprocess.mean)))

    def explainer(name: str) -> Callable:
        return lambda pr, xx: explain(pr, xx, name, target=targets, layer=layer, **method_options.get(name, {}))

    for name in methods:
        result.maps[name] = explainer(name)(probe, x)
        if callback is not None:
            callback(x.shape[0])
    if curves:
        result.maps["random"] = random_map(x, seed, random_cell)
        result.maps["edge"] = edge_map(x)
        names = [*methods, *BASELINES]
        deletion, insertion = deletion_insertion(probe.net, x, [result.maps[n] for n in names], targets, steps,
                                                 deletion_fill, insertion_fill, batch_size, seed,
                                                 probe.preprocess.mean, callback)
        for i, name in enumerate(names):
            result.deletion[name], result.insertion[name] = deletion[i].cpu(), insertion[i].cpu()
            result.deletion_auc[name] = auc(deletion[i], result.fractions).cpu()
            result.insertion_auc[name] = auc(insertion[i], result.fractions).cpu()
    if sanity:
        for name in methods:
            layers, corr = cascading_randomization(probe, x, explainer(name), result.maps[name], seed, callback)
            result.sanity_layers, result.sanity[name] = layers, corr.cpu()
    result.maps = {k: v.cpu() for k, v in result.maps.items()}
    return result
