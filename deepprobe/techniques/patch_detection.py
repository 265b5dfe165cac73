"""A patch that hides objects from a detector (Thys et al. 2019, "Fooling automated surveillance cameras").

The patch is pasted on every box of the class to hide, centred and scaled to the box, with random scale and
rotation (expectation over transformations), and Adam lowers, per image, the highest score any candidate box
gives that class (Thys: max over anchors of objectness x class score; here the candidate's class probability,
which is the detection score -- see deepprobe.models.candidates). Judged on *new* photos, on the 8-bit images,
against a random-noise patch of the same size: a patch only counts if it hides more than plain occlusion does.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import engine as E
from ..engine.patch import BoxPatchedImages, paste_on_boxes
from ..errors import DeepprobeError
from ..io import quantize
from ..models import ModelBundle
from ..models.candidates import candidate_spec
from ..models.outputs import Detections, detect
from ..models.tasks import DETECTION, require_task
from .fool_tasks import _class_list
from .patch import random_patch

THYS_LR = 0.03  # Adam step of Thys et al.
SIZE = 0.45  # patch side as a fraction of the box's side (sqrt of its area)


@dataclass
class AppliedVanishPatch:
    """Patched photos (8-bit grid), the boxes before and after, and the share of boxes hidden per photo."""

    images: torch.Tensor
    before: list[Detections]
    after: list[Detections]
    hidden: torch.Tensor  # (N,) share of each photo's boxes (of the class) no longer detected
    placements: list[list[dict]]

    @property
    def hidden_rate(self) -> float:
        """Share of all boxes hidden, over every photo that had one."""
        total = sum(len(b) for b in self.before)
        gone = sum(float(h) * len(b) for h, b in zip(self.hidden, self.before))
        return gone / total if total else 0.0


@dataclass
class VanishPatchResult:
    patch: torch.Tensor
    classes: list[int] | None
    size: float
    steps: int
    losses: list[float] = field(default_factory=list)
    train_hidden: float = 0.0  # share of the training boxes hidden by the patch (random placement, 8-bit)
    noise_hidden: float = 0.0  # the same for a random-noise patch of the same size: occlusion alone
    stopped: str = "done"
    message: str | None = None


def _boxes(bundle, images: torch.Tensor, classes, min_score: float) -> list[Detections]:
    return [d.of(classes) for d in detect(bundle, images, min_score)]


def train_vanish_patch(bundle: ModelBundle, images: torch.Tensor, vanish="person", *, size: float = SIZE,
                       steps: int = 200, lr: float = THYS_LR, batch_size: int = 8,
                       scale_range: tuple[float, float] = (0.8, 1.2), rotation: float = 20.0,
                       min_score: float = 0.5, seed: int = 0, callback: Callable | None = None) -> VanishPatchResult:
    """Learn a patch that, pasted on each box of `vanish` (a class, a list, or "all"), hides it from the detector.

    images: (N,3,H,W) in [0,1]; only photos where the detector finds the class (score >= min_score) train it.
    """
    require_task(bundle, "a vanishing patch", DETECTION)
    if not 0 < size <= 2:
        raise DeepprobeError(f"patch size must be in (0, 2] (a fraction of the box side), got {size}")
    classes = _class_list(bundle, vanish)
    spec = candidate_spec(bundle)
    images = images.to(bundle.device)
    found = _boxes(bundle, images, classes, min_score)
    keep = [i for i, d in enumerate(found) if len(d)]
    if not keep:
        raise DeepprobeError(f"the detector finds no {vanish} (score >= {min_score:g}) in the training photos")
    gen = torch.Generator().manual_seed(seed)
    param = BoxPatchedImages(images[keep], [found[i].boxes.to(bundle.device) for i in keep], size,
                             batch_size=batch_size, scale_range=scale_range, rotation=rotation, generator=gen)

    def strongest(f: E.Forward) -> torch.Tensor:
        """Per image, the highest score a candidate gives a hidden class (summed over the classes)."""
        rows = []
        for p in spec.read(f.activations):
            cols = [c for c in (range(p.shape[1]) if classes is None else classes) if c != spec.background]
            rows.append(p[:, cols].amax(0).sum())
        return torch.stack(rows)
    res = E.optimize(bundle, param, E.Objective(strongest, "max score", layers=spec.layers), steps=steps, lr=lr,
                     optimizer="adam", callback=callback, keep_best=False)
    patch = quantize(param.patch.detach())
    train = [images[i:i + 1] for i in keep]
    hidden = _rate(bundle, train, patch, classes, size, scale_range, rotation, min_score, seed + 1)
    noise = _rate(bundle, train, random_patch(patch.shape[-1], seed), classes, size, scale_range, rotation,
                  min_score, seed + 1)
    return VanishPatchResult(patch=patch, classes=classes, size=size, steps=res.steps, losses=res.losses,
                             train_hidden=hidden, noise_hidden=noise, stopped=res.stopped, message=res.message)


def _rate(bundle, images: list[torch.Tensor], patch, classes, size, scale_range, rotation, min_score, seed) -> float:
    applied = [apply_vanish_patch(bundle, x, patch, classes, size=size, scale_range=scale_range, rotation=rotation,
                                  min_score=min_score, seed=seed + i) for i, x in enumerate(images)]
    total = sum(len(b) for a in applied for b in a.before)
    return sum(a.hidden_rate * sum(len(b) for b in a.before) for a in applied) / total if total else 0.0


def apply_vanish_patch(bundle: ModelBundle, images: torch.Tensor, patch: torch.Tensor, vanish="person", *,
                       size: float = SIZE, scale_range: tuple[float, float] = (0.8, 1.2), rotation: float = 20.0,
                       min_score: float = 0.5, seed: int = 0, placement: str | None = "random") -> AppliedVanishPatch:
    """Paste `patch` on every box of `vanish` that the detector finds in `images` and detect again on the 8-bit
    result. placement "random": the training distribution (seeded); None: centred, upright, at `size`."""
    require_task(bundle, "a vanishing patch", DETECTION)
    classes = _class_list(bundle, vanish)
    images = images.to(bundle.device)
    before = _boxes(bundle, images, classes, min_score)
    gen = torch.Generator().manual_seed(seed)
    spread = (scale_range, rotation) if placement == "random" else ((1.0, 1.0), 0.0)
    with torch.no_grad():
        patched, rows = paste_on_boxes(images, patch.to(images), [d.boxes.to(images.device) for d in before], size,
                                       spread[0], spread[1], gen)
        patched = quantize(patched)
    after = _boxes(bundle, patched, classes, min_score)
    hidden = []
    for b, a in zip(before, after):
        if not len(b):
            hidden.append(0.0)
            continue
        seen = b.still_in(a)
        hidden.append(1 - sum(seen) / len(seen))
    return AppliedVanishPatch(images=patched, before=before, after=after, hidden=torch.tensor(hidden),
                              placements=rows)
