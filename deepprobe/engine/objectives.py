"""Objectives that add and scale like numbers. Each maps a Forward to a per-image LOSS (N,), lower = better.

Maximizing something (a logit, a channel) is written as its negative, so every objective composes by `+`
and `*` into one loss the engine minimizes. Regularizers are objectives too.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .capture import Forward, gram


class Objective:
    """A named per-image loss with the layers it needs captured."""

    def __init__(self, fn: Callable[[Forward], torch.Tensor], name: str, layers: tuple[str, ...] = (),
                 needs_logits: bool = False):
        self.fn = fn
        self.name = name
        self.layers = tuple(layers)
        self.needs_logits = needs_logits

    def __call__(self, fwd: Forward) -> torch.Tensor:
        return self.fn(fwd)

    def __add__(self, other: Objective | float) -> Objective:
        if not isinstance(other, Objective):
            value = float(other)
            return Objective(lambda f: self(f) + value, f"{self.name} + {value:g}", self.layers, self.needs_logits)
        return Objective(lambda f: self(f) + other(f), f"{self.name} + {other.name}",
                         self.layers + other.layers, self.needs_logits or other.needs_logits)

    __radd__ = __add__

    def __mul__(self, weight: float) -> Objective:
        weight = float(weight)
        return Objective(lambda f: weight * self(f), f"{weight:g}*{self.name}", self.layers, self.needs_logits)

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return self * -1.0

    def __sub__(self, other: Objective | float) -> Objective:
        return self + (-other)

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(values.shape[0], -1).mean(dim=1)


def _targets(target, fwd: Forward) -> torch.Tensor:
    t = torch.as_tensor(target, device=fwd.logits.device, dtype=torch.long)
    return t.expand(fwd.logits.shape[0]) if t.dim() == 0 else t


# ----- classifier outputs --------------------------------------------------------------------
def class_logit(target) -> Objective:
    """Drive class `target` (int or per-image tensor) up: loss = -logit."""
    return Objective(lambda f: -f.logits.gather(1, _targets(target, f)[:, None])[:, 0], f"logit[{target}]",
                     needs_logits=True)


def class_probability(target) -> Objective:
    """Drive the softmax probability of `target` up: loss = -p."""
    return Objective(lambda f: -torch.softmax(f.logits, 1).gather(1, _targets(target, f)[:, None])[:, 0],
                     f"prob[{target}]", needs_logits=True)


def cross_entropy(target) -> Objective:
    """Cross-entropy to `target` (targeted attacks minimize it; untargeted use its negative)."""
    return Objective(lambda f: F.cross_entropy(f.logits, _targets(target, f), reduction="none"), f"ce[{target}]",
                     needs_logits=True)


def regression(target: "float | torch.Tensor", output: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Objective:
    """Squared error between a scalar model output (e.g. a predicted age) and `target`."""
    read = output or (lambda logits: logits.reshape(logits.shape[0], -1)[:, 0])
    label = f"{target:g}" if isinstance(target, (int, float)) else "target"
    return Objective(lambda f: (read(f.logits) - target) ** 2, f"(out-{label})^2", needs_logits=True)


# ----- internal units ------------------------------------------------------------------------
def channel(layer: str, index: int) -> Objective:
    """Mean activation of one channel of a (N,C,H,W) layer, driven up."""
    return Objective(lambda f: -f[layer][:, index].reshape(f[layer].shape[0], -1).mean(1), f"{layer}:{index}",
                     layers=(layer,))


def neuron(layer: str, index: int, y: int | None = None, x: int | None = None,
           map_size: tuple[int, int] | None = None) -> Objective:
    """One spatial unit of a channel (centre by default), driven up.

    map_size: the (H,W) of the map that y,x refer to; when robustness transforms pad or rescale the input,
    the actual map differs and the unit is taken at the same relative position.
    """
    def fn(f: Forward) -> torch.Tensor:
        act = f[layer]
        h, w = act.shape[2], act.shape[3]
        yy = h // 2 if y is None else _rescale(y, map_size[0] if map_size else h, h)
        xx = w // 2 if x is None else _rescale(x, map_size[1] if map_size else w, w)
        return -act[:, index, yy, xx]
    return Objective(fn, f"{layer}:{index}@{y},{x}", layers=(layer,))


def _rescale(i: int, size: int, actual: int) -> int:
    return i if size == actual else min(actual - 1, int((i + 0.5) * actual / size))


def rowwise(objectives: list[Objective]) -> Objective:
    """Image i of the batch gets objectives[i] (one run optimizes a different unit per image)."""
    layers = tuple(dict.fromkeys(layer for o in objectives for layer in o.layers))

    def fn(f: Forward) -> torch.Tensor:
        return torch.stack([o(f)[i] for i, o in enumerate(objectives)])
    return Objective(fn, "rows(" + ", ".join(o.name for o in objectives) + ")", layers,
                     any(o.needs_logits for o in objectives))


def layer_norm(layer: str) -> Objective:
    """Mean squared activation of a layer, driven up (Deep Dream)."""
    return Objective(lambda f: -_per_image(f[layer].pow(2)), f"|{layer}|^2", layers=(layer,))


def feature_match(layer: str, reference: torch.Tensor, normalized: bool = True) -> Objective:
    """||phi(x) - phi0||^2, divided by ||phi0||^2 when `normalized` (Mahendran & Vedaldi)."""
    ref = reference.detach()
    scale = ref.reshape(ref.shape[0], -1).pow(2).sum(1).clamp_min(1e-12) if normalized else None

    def fn(f: Forward) -> torch.Tensor:
        diff = (f[layer] - ref).reshape(ref.shape[0], -1).pow(2).sum(1)
        return diff / scale if normalized else diff / ref[0].numel()
    return Objective(fn, f"match({layer})", layers=(layer,))


def gram_match(layer: str, reference_gram: torch.Tensor) -> Objective:
    """Squared distance between Gram matrices (style loss); reference (1,C,C) or (N,C,C)."""
    ref = reference_gram.detach()
    return Objective(lambda f: _per_image((gram(f[layer]) - ref).pow(2)), f"gram({layer})", layers=(layer,))


# ----- image priors (regularizers) ---------------------------------------------------------------
def total_variation(beta: float = 2.0) -> Objective:
    """sum((dx^2 + dy^2)^(beta/2)) per pixel, averaged; beta = 2 avoids spikes (Mahendran & Vedaldi)."""
    def fn(f: Forward) -> torch.Tensor:
        x = f.images
        dx = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
        dy = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
        return _per_image((dx.pow(2) + dy.pow(2) + 1e-8).pow(beta / 2))
    return Objective(fn, f"tv{beta:g}")


def lp_norm(alpha: float = 6.0, center: float = 0.5) -> Objective:
    """Mean |x - center|^alpha: keeps pixel values in a natural range."""
    return Objective(lambda f: _per_image((f.images - center).abs().pow(alpha)), f"l{alpha:g}")


def l2_to(original: torch.Tensor) -> Objective:
    """Mean squared distance to the original image (keeps identity / imperceptibility)."""
    ref = original.detach()
    return Objective(lambda f: _per_image((f.images - ref).pow(2)), "l2(orig)")
