"""Feature inversion (Mahendran & Vedaldi, CVPR 2015): which images does a layer see as this photo?

From random noise, minimize ||phi(x) - phi0||^2 / ||phi0||^2 + alpha_weight * R_alpha(x) + tv * R_TV(x) (the
priors and their normalization are described in deepprobe/options/invert.py). Several layers and several
photos run as one batch: every row of the parameter batch is one (photo, layer) pair matched to its own
layer's target, and every row of a photo starts from the same noise. The model is in eval mode, so rows do
not interact and a batch gives what separate runs give. The error reported is measured afterwards with a
fresh forward pass: ||phi(x) - phi0|| / ||phi0|| (not squared).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .. import engine as E
from ..display import Shows
from ..errors import DeepprobeError
from ..models import ModelBundle
from ..models.layers import default_layers
from ..options.invert import DEFAULT_LAYERS, LR_FLOOR, PIXEL_SCALE, TV_SCALE, Options
from ..options.ranges import check_ranges
from .invert_params import Pyramid


@dataclass
class InvertResult(Shows):
    """Reconstructions per layer (shallow to deep), the photos they match, and the errors reached. In Jupyter it
    shows `deepprobe invert`'s grid per photo (original | layers, each with its feature error)."""

    layers: list[str]  # in the order the network computes them (shallow to deep)
    images: dict[str, torch.Tensor]  # layer -> (N,3,H,W) in [0,1]
    originals: torch.Tensor  # (N,3,H,W): the photos at the working size
    start: torch.Tensor  # (N,3,H,W): the noise every layer's reconstruction started from
    errors: dict[str, torch.Tensor]  # layer -> (N,) relative feature error ||phi(x)-phi0|| / ||phi0||
    start_errors: dict[str, torch.Tensor]  # the same for the starting noise
    losses: list[float] = field(default_factory=list)  # mean loss per step (averaged over batches)
    steps: int = 0
    stopped: str = "done"  # done | interrupted | nan (a batch not reached keeps its starting noise)
    message: str | None = None

    def figure(self):
        from ..display import stack
        from ..figures.synthesis import invert_grid

        (title,) = self._needs("model_title")
        return stack([invert_grid(self.originals[i:i + 1], {n: self.images[n][i:i + 1] for n in self.layers},
                                  {n: float(self.errors[n][i]) for n in self.layers}, self.layers,
                                  f"image {i} · inverted from {title} · {self.steps} steps")
                      for i in range(self.originals.shape[0])])


def invert(probe: ModelBundle, x: torch.Tensor, layer: Sequence[str] | str | None = None, *,
           steps: int = Options.steps, lr: float = Options.lr, tv: float = Options.tv, beta: float = Options.beta,
           alpha_weight: float = Options.alpha_weight, alpha: float = Options.alpha, noise: float = Options.noise,
           levels: int = Options.levels, size: int | None = Options.size,
           batch_size: int = Options.batch_size, seed: int = 0,
           callback: Callable[[int, int, float, E.Forward | None], None] | None = None) -> InvertResult:
    """Reconstruct (N,3,H,W) photos in [0,1] from each layer's features; `size` resizes them first (longest side).

    `layer` is one dotted name or several; `batch_size` caps how many (photo, layer) rows are optimized together
    (results do not depend on it). Ctrl-C stops and keeps the best images so far (stopped = "interrupted").
    """
    check_ranges("invert", locals())
    layers = default_layers(probe, _layers(layer), DEFAULT_LAYERS)
    for name in layers:
        probe.layer(name)  # unknown layers fail here, with suggestions
    from .style import fit_size

    photos = fit_size(x.detach().to(probe.device).float().clamp(0, 1), size)
    if photos.dim() == 3:
        photos = photos[None]
    with torch.no_grad():
        targets = E.forward(probe, photos, layers, need_logits=False).activations
    layers = [name for name in targets if name in layers]  # the order the forward pass reached them
    generator = torch.Generator().manual_seed(seed)
    start = (0.5 + (torch.rand(photos.shape, generator=generator) * 2 - 1) * noise).to(photos.device)
    rows = [(i, name) for i in range(photos.shape[0]) for name in layers]
    best = {row: start[row[0]] for row in rows}
    prior = (alpha_weight / PIXEL_SCALE ** alpha) * E.lp_norm(alpha) + (tv / TV_SCALE ** beta) * E.total_variation(beta)
    chunks = [rows[k:k + batch_size] for k in range(0, len(rows), batch_size)]
    curves, done, stopped, message = [], 0, "done", None
    for chunk in chunks:
        objective = E.rowwise([_match(name, targets[name], [i for i, _ in chunk]) for _, name in chunk]) + prior
        param = Pyramid(torch.stack([start[i] for i, _ in chunk]), levels)
        res = E.optimize(probe, param, objective, steps=steps, lr=lr, optimizer="adam",
                         schedule=E.cosine_decay(steps, LR_FLOOR), check_every=10,
                         callback=_offset(callback, done, steps * len(chunks)))
        best.update({row: image for row, image in zip(chunk, res.images)})
        curves.append(res.losses)
        done += res.steps
        if res.stopped in ("interrupted", "nan"):
            stopped, message = res.stopped, res.message
            break
    images = {name: torch.stack([best[(i, name)] for i in range(photos.shape[0])]) for name in layers}
    return InvertResult(layers=layers, images=images, originals=photos, start=start,
                        errors=relative_errors(probe, images, targets),
                        start_errors=relative_errors(probe, {n: start for n in layers}, targets),
                        losses=_mean_curve(curves), steps=done, stopped=stopped,
                        message=message)._attach(model_title=probe.title)


@torch.no_grad()
def relative_errors(probe: ModelBundle, images: dict[str, torch.Tensor],
                    targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """layer -> (N,) ||phi(x) - phi0|| / ||phi0|| for the images reconstructed at that layer (fresh forward)."""
    errors = {}
    for name, batch_images in images.items():
        feats = E.forward(probe, batch_images.to(probe.device), [name], need_logits=False)[name].float()
        ref = targets[name].float()
        errors[name] = ((feats - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1).clamp_min(1e-12)).cpu()
    return errors


@torch.no_grad()
def pixel_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two same-size image batches over all pixels and channels, (N,)."""
    a = a.float().cpu().flatten(1)
    b = b.float().cpu().flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def _match(name: str, target: torch.Tensor, image_rows: list[int]) -> E.Objective:
    """Normalized feature distance of each batch row to its own photo's target at `name`."""
    return E.feature_match(name, target[image_rows])


def _offset(callback, done: int, total: int):
    if callback is None:
        return None
    return lambda step, _steps, loss, fwd: callback(done + step, total, loss, fwd)


def _mean_curve(curves: list[list[float]]) -> list[float]:
    curves = [c for c in curves if c]
    if not curves:
        return []
    n = min(len(c) for c in curves)
    return [sum(c[k] for c in curves) / len(curves) for k in range(n)]


def _layers(layer: Sequence[str] | str | None) -> list[str]:
    if layer is None:
        return list(Options().layer)
    layers = [layer] if isinstance(layer, str) else list(layer)
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise DeepprobeError("give at least one --layer")
    return layers
