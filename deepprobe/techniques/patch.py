"""Adversarial patch (Brown et al. 2017): one universal sticker that makes a model see the target class.

The patch is learned by expectation over transformations: every step pastes it into a random batch of
training photos at random places, sizes and angles and lowers the cross-entropy to the target. It is then
judged on *new* photos, on the 8-bit images a user would save, by an independent forward pass.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import engine as E
from ..engine.patch import (
    PatchedImages,
    Placements,
    fixed_placements,
    paste,
    random_placements,
)
from ..display import Shows
from ..errors import DeepprobeError
from ..io import quantize
from ..models import ModelBundle
from ..models.bundle import require_classifier
from ..options.patch import Options
from ..options.ranges import check_ranges

_DEFAULTS = Options()
Placement = None | str | tuple[float, float, float, float]


@dataclass
class PatchResult(Shows):
    """The learned patch (1,3,s,s) on the 8-bit grid, and how training went. In Jupyter: `patch train`'s preview,
    the patch | the first training photos patched at random places (the CLI's seeds, so the same picture)."""

    patch: torch.Tensor
    target: int
    size: float
    steps: int
    losses: list[float] = field(default_factory=list)
    train_success: float = 0.0  # targeted success on the training photos, random placements, 8-bit
    stopped: str = "done"
    message: str | None = None

    def figure(self):
        from ..figures.patch import patch_preview

        probe, images, seed, options = self._needs("bundle", "images", "seed", "options")
        applied = apply_patch(probe, images[:_DEFAULTS.preview], self.patch, self.target, size=self.size,
                              placement="random", seed=seed + 7, **options)
        return patch_preview(self.patch, applied, probe.class_name, self.size, self.train_success)


@dataclass
class AppliedPatch(Shows):
    """Patched photos (8-bit grid), what the model sees in them, and the targeted success rate. In Jupyter:
    `patch apply`'s grid of the first patched photos with what the model sees."""

    images: torch.Tensor
    placements: list[dict]
    predicted: torch.Tensor  # (N,) top class on the patched 8-bit images
    target_prob: torch.Tensor  # (N,) probability of the target
    success: torch.Tensor  # (N,) bool: top class == target
    target: int

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if self.success.numel() else 0.0

    def figure(self):
        from ..figures.patch import SHOWN, applied_caption, applied_grid

        (probe,) = self._needs("bundle")
        shown = range(min(SHOWN, len(self.images)))
        return applied_grid([self.images[i].cpu() for i in shown],
                            [applied_caption(probe.class_name, self, i) for i in shown],
                            int(self.success.sum()), len(self.images), probe.class_name(self.target))


def _target_index(probe: ModelBundle, target: int | str | None) -> int:
    require_classifier(probe, "a classifier patch (--target)")
    if target is None:
        raise DeepprobeError("a patch needs a target class (--target)")
    return probe.class_index(target)


def train_patch(probe: ModelBundle, images: torch.Tensor, target: int | str, *, size: float = _DEFAULTS.size,
                steps: int = _DEFAULTS.steps, lr: float = _DEFAULTS.lr, batch_size: int = _DEFAULTS.batch_size,
                scale_range: tuple[float, float] = (_DEFAULTS.scale_min, _DEFAULTS.scale_max),
                rotation: float = _DEFAULTS.rotation, seed: int = 0,
                callback: Callable | None = None) -> PatchResult:
    """Learn one patch (side = `size` x the shorter image side) that turns `images` into `target`.

    images: (N,3,H,W) in [0,1] at the model's input size. Each Adam step pastes the patch into
    `batch_size` of them with random centre, scale (size x U(scale_range)) and rotation (+-`rotation` deg).
    """
    _check(locals(), scale_range)
    index = _target_index(probe, target)
    gen = torch.Generator().manual_seed(seed)
    images = images.to(probe.device)
    param = PatchedImages(images, size, batch_size=batch_size, scale_range=scale_range, rotation=rotation,
                          generator=gen)
    res = E.optimize(probe, param, E.cross_entropy(index), steps=steps, lr=lr, optimizer="adam",
                     callback=callback, keep_best=False)
    patch = quantize(param.patch.detach())
    check = apply_patch(probe, images, patch, index, size=size, placement="random", seed=seed + 1,
                        scale_range=scale_range, rotation=rotation)
    return PatchResult(patch=patch, target=index, size=size, steps=res.steps, losses=res.losses,
                       train_success=check.success_rate, stopped=res.stopped, message=res.message)._attach(
        bundle=probe, images=images, seed=seed, options={"scale_range": scale_range, "rotation": rotation})


def apply_patch(probe: ModelBundle, images: torch.Tensor, patch: torch.Tensor, target: int | str, *,
                size: float = _DEFAULTS.size, placement: Placement = "random", seed: int = 0,
                scale_range: tuple[float, float] = (_DEFAULTS.scale_min, _DEFAULTS.scale_max),
                rotation: float = _DEFAULTS.rotation, batch_size: int = 16) -> AppliedPatch:
    """Paste `patch` into `images` and measure the targeted success rate on the 8-bit results.

    placement: None = centred, upright, at `size`; "random" = the training distribution (seeded);
    (x, y, scale, angle) = centre as fractions of width/height, side as a fraction of the shorter side,
    angle in degrees.
    """
    _check(locals(), scale_range)
    index = _target_index(probe, target)
    images = images.to(probe.device)
    patch = patch.to(probe.device, images.dtype)
    n, _, h, w = images.shape
    where = _placements(n, placement, size, scale_range, rotation, seed, w / h, probe.device)
    with torch.no_grad():
        patched = quantize(paste(images, patch, where))
        probs = torch.cat([probe.predict(chunk) for chunk in patched.split(batch_size)])
    predicted = probs.argmax(1)
    return AppliedPatch(images=patched, placements=where.as_rows(), predicted=predicted.cpu(),
                        target_prob=probs[:, index].cpu(), success=(predicted == index).cpu(),
                        target=index)._attach(bundle=probe)


def _check(values: dict, scale_range: tuple[float, float]) -> None:
    """The options' declared ranges (deepprobe/options/patch.py), the scale range given as its two ends."""
    check_ranges("patch", {**values, "scale_min": scale_range[0], "scale_max": scale_range[1]})


def _placements(n: int, placement: Placement, size: float, scale_range: tuple[float, float], rotation: float,
                seed: int, aspect: float, device: torch.device) -> Placements:
    if placement is None:
        return fixed_placements(n, 0.5, 0.5, size, 0.0, device)
    if isinstance(placement, str):
        if placement != "random":
            raise DeepprobeError(f"placement must be 'random', None or (x, y, scale, angle), got {placement!r}")
        gen = torch.Generator().manual_seed(seed)
        return random_placements(n, size, scale_range, rotation, gen, aspect=aspect, device=device)
    try:
        x, y, side, angle = (float(v) for v in placement)
    except (TypeError, ValueError):
        raise DeepprobeError(f"placement must be (x, y, scale, angle), got {placement!r}") from None
    check_ranges("patch", {"x": x, "y": y, "scale": side})
    return fixed_placements(n, x, y, side, angle, device)


def random_patch(size_pixels: int, seed: int = 0) -> torch.Tensor:
    """A uniform-noise patch: the baseline a learned patch must beat."""
    return quantize(torch.rand((1, 3, size_pixels, size_pixels), generator=torch.Generator().manual_seed(seed)))
