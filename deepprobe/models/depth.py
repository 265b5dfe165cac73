"""What a depth estimator predicted: the map, a region's depth, and the relative-depth error (AbsRel).

`estimate_depth(bundle, x)` -> one `DepthMap` per image (the (H,W) prediction at the input's size). Whether a
larger value means nearer (inverse depth, Depth Anything's relative models) or farther (metric depth) is the
adapter's `larger_is_nearer`; every figure here says which.

AbsRel (mean |d - d*| / d* over valid pixels) compares a prediction d with a reference depth d*. Relative
(inverse-depth) models know depth only up to scale and shift, so their prediction is first aligned to the
reference by least squares in inverse depth (scale and shift), as in MiDaS's and Depth Anything's zero-shot
evaluation; metric models are compared as they are.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..display import Shows
from ..errors import DeepprobeError
from .tasks import DEPTH, DepthNet, require_task

Region = tuple[float, float, float, float]  # x0, y0, x1, y1 in input pixels (pixels whose centre lies inside)
COLORMAP = "Spectral_r"  # Depth Anything's demo colours: near red, far blue


def depth_net(net: torch.nn.Module) -> DepthNet:
    """The DepthNet adapter inside a bundle's wrapped network."""
    found = next((m for m in net.modules() if isinstance(m, DepthNet)), None)
    if found is None:
        raise DeepprobeError("this model is not a depth estimator")
    return found


def region_mask(region: Region | None, height: int, width: int, device=None) -> torch.Tensor:
    """(H,W) bool: the pixels whose centre lies in `region` (the whole image for None)."""
    if region is None:
        return torch.ones(height, width, dtype=torch.bool, device=device)
    x0, y0, x1, y1 = (float(v) for v in region)
    if not (x0 < x1 and y0 < y1):
        raise DeepprobeError(f"region {_text(region)} is empty: it needs X0 < X1 and Y0 < Y1")
    ys = torch.arange(height, device=device).view(-1, 1) + 0.5
    xs = torch.arange(width, device=device).view(1, -1) + 0.5
    mask = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    if not mask.any():
        raise DeepprobeError(f"region {_text(region)} holds no pixel of the {width}x{height} image")
    return mask


def _text(region: Region) -> str:
    return ",".join(f"{v:g}" for v in region)


def region_means(depth: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N,) mean depth inside `mask` and (N,) outside it (None when the mask covers the whole image)."""
    m = mask.to(depth.device, depth.dtype)
    inside = (depth * m).sum((-2, -1)) / m.sum()
    rest = 1 - m
    outside = (depth * rest).sum((-2, -1)) / rest.sum() if rest.sum() > 0 else None
    return inside, outside


@dataclass
class DepthMap(Shows):
    """One image's predicted depth (H,W) at its input size, and what larger values mean. In Jupyter: `classify`'s
    photo | depth in colour panel."""

    depth: torch.Tensor
    larger_is_nearer: bool
    region: Region | None = None

    def figure(self):
        from ..figures.foundation import depth_panel

        image, name, title = self._needs("image", "name", "model_title")
        return depth_panel(image, self, name, title)

    def nearness(self) -> torch.Tensor:
        """(H,W) values that grow as things come nearer (the depth, negated for metric models): for drawing."""
        d = self.depth.float()
        return d if self.larger_is_nearer else -d

    def as_dict(self) -> dict:
        d = self.depth.float()
        out = {"min": round(float(d.min()), 6), "max": round(float(d.max()), 6), "mean": round(float(d.mean()), 6),
               "larger_is_nearer": self.larger_is_nearer}
        if self.region is not None:
            inside, outside = region_means(d, region_mask(self.region, *d.shape))
            out.update(region=list(self.region), region_mean=round(float(inside), 6),
                       rest_mean=None if outside is None else round(float(outside), 6))
        return out


@torch.no_grad()
def estimate_depth(bundle, images: torch.Tensor, region: Region | None = None) -> list[DepthMap]:
    """Depth per image of a (N,3,H,W) batch in [0,1], at the input's size (a region's mean is reported too)."""
    require_task(bundle, "estimate_depth", DEPTH)
    net = depth_net(bundle.net)
    maps = bundle.net(images.to(bundle.device)).float().cpu()
    return [DepthMap(m, net.larger_is_nearer, region)._attach(image=x.detach(), name=f"image {i}",
                                                              model_title=bundle.title)
            for i, (m, x) in enumerate(zip(maps, images))]


# ------------------------------------------------------------------------------------------ relative error
def align(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`pred` (H,W) scaled and shifted to fit `target` over `valid` pixels by least squares."""
    p, t = pred[valid].double(), target[valid].double()
    design = torch.stack([p, torch.ones_like(p)], 1)
    solution = torch.linalg.lstsq(design, t[:, None]).solution[:, 0]
    return (pred.double() * solution[0] + solution[1]).to(pred.dtype)


def abs_rel(pred: torch.Tensor, reference: torch.Tensor, larger_is_nearer: bool,
            reference_is_depth: bool = True) -> float:
    """AbsRel of one (H,W) prediction against a reference: ground-truth depth (`reference_is_depth`, 0 or
    non-finite = no data) or another prediction of the same model (e.g. the clean one). Inverse-depth models are
    aligned in inverse depth first (module docstring)."""
    pred, ref = pred.double(), reference.double().to(pred.device)
    if not reference_is_depth and larger_is_nearer:  # a prediction in inverse depth -> depth where it is positive
        ref = torch.where(ref > 0, 1 / ref.clamp_min(1e-12), torch.zeros_like(ref))
    valid = torch.isfinite(ref) & (ref > 0)
    if int(valid.sum()) < 2:
        raise DeepprobeError("the reference depth has fewer than 2 valid pixels")
    if larger_is_nearer:
        inverse = torch.where(valid, 1 / ref.clamp_min(1e-12), torch.zeros_like(ref))
        disparity = align(pred, inverse, valid).clamp_min(float(inverse[valid].min()))
        pred = 1 / disparity
    return float(((pred - ref).abs() / ref.clamp_min(1e-12))[valid].mean())


def resize_reference(reference: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A ground-truth depth map brought to the prediction's size (nearest: no blending of valid and missing)."""
    import torch.nn.functional as F

    if tuple(reference.shape[-2:]) == tuple(size):
        return reference
    return F.interpolate(reference[None, None].float(), size=tuple(size), mode="nearest")[0, 0]
