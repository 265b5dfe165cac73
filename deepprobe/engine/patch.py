"""A patch pasted into images: differentiable placement (affine_grid + grid_sample + a mask).

`paste` puts one (1,3,s,s) patch into a batch of images at per-image centre, side and angle; gradients
reach the patch pixels. `PatchedImages` is a Parameterization for `optimize`: every call draws a batch
of training images and fresh random placements, so minimizing its loss is an expectation over
transformations (Brown et al. 2017).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .params import Parameterization


@dataclass
class Placements:
    """Per-image placement: centre (x, y) as fractions of width/height, side as a fraction of the
    shorter image side, angle in degrees. All (N,) tensors."""

    x: torch.Tensor
    y: torch.Tensor
    side: torch.Tensor
    angle: torch.Tensor

    def as_rows(self) -> list[dict]:
        cols = [t.detach().cpu().tolist() for t in (self.x, self.y, self.side, self.angle)]
        return [{"x": round(a, 4), "y": round(b, 4), "scale": round(c, 4), "angle": round(d, 2)}
                for a, b, c, d in zip(*cols)]


def fixed_placements(n: int, x: float, y: float, side: float, angle: float,
                     device: torch.device | str = "cpu") -> Placements:
    """The same placement for every image."""
    full = lambda v: torch.full((n,), float(v), device=device)
    return Placements(full(x), full(y), full(side), full(angle))


def random_placements(n: int, side: float, scale_range: tuple[float, float], rotation: float,
                      generator: torch.Generator | None = None, aspect: float = 1.0,
                      device: torch.device | str = "cpu") -> Placements:
    """Random side (side * U(scale_range)), angle (U(-rotation, rotation)) and a centre that keeps the
    unrotated patch inside the image. `aspect` = width / height of the images."""
    u = torch.rand((4, n), generator=generator).to(device)
    sides = side * (scale_range[0] + (scale_range[1] - scale_range[0]) * u[0])
    angle = rotation * (2 * u[1] - 1)
    # half the patch side in units of width / height (the side is a fraction of the shorter side)
    half_w = sides / 2 * min(1.0, 1.0 / aspect)
    half_h = sides / 2 * min(1.0, aspect)
    x = half_w + (1 - 2 * half_w).clamp_min(0) * u[2]
    y = half_h + (1 - 2 * half_h).clamp_min(0) * u[3]
    return Placements(x, y, sides, angle)


def paste(images: torch.Tensor, patch: torch.Tensor, where: Placements) -> torch.Tensor:
    """Composite `patch` (1,3,s,s) or (N,3,s,s) into `images` (N,3,H,W) at `where` (differentiable)."""
    n, _, h, w = images.shape
    if where.x.shape[0] != n:
        raise ValueError(f"{where.x.shape[0]} placements for {n} images")
    short = min(h, w)
    side_px = (where.side * short).clamp_min(1.0)
    a = torch.deg2rad(where.angle)
    cos, sin = torch.cos(a), torch.sin(a)
    cx, cy = 2 * where.x - 1, 2 * where.y - 1  # normalized image coordinates of the centre
    # image (normalized) -> patch (normalized): rotate by -angle about the centre, divide by half side.
    row1 = torch.stack([cos * w / side_px, sin * h / side_px], dim=1)
    row2 = torch.stack([-sin * w / side_px, cos * h / side_px], dim=1)
    t1 = -(row1[:, 0] * cx + row1[:, 1] * cy)
    t2 = -(row2[:, 0] * cx + row2[:, 1] * cy)
    theta = torch.stack([torch.cat([row1, t1[:, None]], 1), torch.cat([row2, t2[:, None]], 1)], dim=1)
    grid = F.affine_grid(theta.to(images.dtype), [n, 4, h, w], align_corners=False)
    src = patch.expand(n, -1, -1, -1)
    ones = torch.ones_like(src[:, :1])
    warped = F.grid_sample(torch.cat([src, ones], 1), grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    content, mask = warped[:, :3], warped[:, 3:]
    return images * (1 - mask) + content * mask


class PatchedImages(Parameterization):
    """One universal patch (the only parameter) pasted into a random batch of `images` at random
    placements on every forward(): what `optimize` minimizes is an expectation over transformations."""

    def __init__(self, images: torch.Tensor, side: float, patch_pixels: int | None = None, batch_size: int = 8,
                 scale_range: tuple[float, float] = (0.8, 1.2), rotation: float = 20.0,
                 generator: torch.Generator | None = None, init: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("images", images.detach())
        h, w = images.shape[-2:]
        pixels = patch_pixels or max(8, math.ceil(side * scale_range[1] * min(h, w)))
        if init is None:
            init = torch.rand((1, 3, pixels, pixels), generator=generator)
        self.patch = nn.Parameter(init.detach().clone().clamp(0, 1).to(images.device))
        self.side, self.batch_size = float(side), int(batch_size)
        self.scale_range, self.rotation = (float(scale_range[0]), float(scale_range[1])), float(rotation)
        self.generator = generator
        self.last: Placements | None = None

    def sample(self) -> tuple[torch.Tensor, Placements]:
        """A random batch of training images (without replacement when possible) and placements."""
        n = self.images.shape[0]
        if self.batch_size >= n:
            index = torch.arange(n)
        else:
            index = torch.randperm(n, generator=self.generator)[: self.batch_size]
        h, w = self.images.shape[-2:]
        where = random_placements(len(index), self.side, self.scale_range, self.rotation, self.generator,
                                  aspect=w / h, device=self.images.device)
        return self.images[index.to(self.images.device)], where

    def forward(self) -> torch.Tensor:
        images, where = self.sample()
        self.last = where
        return paste(images, self.patch, where)

    @torch.no_grad()
    def project_(self) -> None:
        self.patch.clamp_(0, 1)


def box_placements(boxes: list[torch.Tensor], pick: int, side: float, size: tuple[int, int],
                   scale_range: tuple[float, float] = (1.0, 1.0), rotation: float = 0.0,
                   generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Placements:
    """A placement on the `pick`-th box of each image (cycling through its boxes): centred on the box, side =
    `side` x sqrt(box area) x U(scale_range), angle U(-rotation, rotation) (Thys et al. 2019 put the patch on
    each person's box, scaled to it). `size` = (H, W) of the images; boxes are xyxy in their pixels."""
    h, w = size
    chosen = torch.stack([b[pick % len(b)] for b in boxes]).float().to(device)
    u = torch.rand((2, len(boxes)), generator=generator).to(device)
    scale = scale_range[0] + (scale_range[1] - scale_range[0]) * u[0]
    box_side = ((chosen[:, 2] - chosen[:, 0]).clamp_min(1) * (chosen[:, 3] - chosen[:, 1]).clamp_min(1)).sqrt()
    return Placements(x=(chosen[:, 0] + chosen[:, 2]) / 2 / w, y=(chosen[:, 1] + chosen[:, 3]) / 2 / h,
                      side=side * box_side * scale / min(h, w), angle=rotation * (2 * u[1] - 1))


def paste_on_boxes(images: torch.Tensor, patch: torch.Tensor, boxes: list[torch.Tensor], side: float,
                   scale_range: tuple[float, float] = (1.0, 1.0), rotation: float = 0.0,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[list[dict]]]:
    """`patch` pasted on every box of every image (images without boxes stay as they are), and the placements."""
    out, rows = images, [[] for _ in boxes]
    having = [i for i, b in enumerate(boxes) if len(b)]
    for pick in range(max((len(boxes[i]) for i in having), default=0)):
        idx = [i for i in having if pick < len(boxes[i])]
        where = box_placements([boxes[i] for i in idx], pick, side, tuple(images.shape[-2:]), scale_range,
                               rotation, generator, images.device)
        sub = paste(out[idx], patch, where)
        out = out.index_copy(0, torch.tensor(idx, device=images.device), sub)
        for i, row in zip(idx, where.as_rows()):
            rows[i].append(row)
    return out, rows


class BoxPatchedImages(PatchedImages):
    """PatchedImages whose patch goes on every box of each training image (a detector's objects) with random
    scale and rotation, rather than anywhere in the image."""

    def __init__(self, images: torch.Tensor, boxes: list[torch.Tensor], side: float, batch_size: int = 8,
                 scale_range: tuple[float, float] = (0.8, 1.2), rotation: float = 20.0,
                 generator: torch.Generator | None = None):
        largest = max(float(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).clamp_min(1).sqrt().max()) for b in boxes)
        super().__init__(images, side, patch_pixels=max(8, math.ceil(side * scale_range[1] * largest)),
                         batch_size=batch_size, scale_range=scale_range, rotation=rotation, generator=generator)
        self.boxes = boxes

    def forward(self) -> torch.Tensor:
        n = self.images.shape[0]
        index = torch.arange(n) if self.batch_size >= n else \
            torch.randperm(n, generator=self.generator)[: self.batch_size]
        out, _ = paste_on_boxes(self.images[index.to(self.images.device)], self.patch,
                                [self.boxes[i] for i in index.tolist()], self.side, self.scale_range, self.rotation,
                                self.generator)
        return out
