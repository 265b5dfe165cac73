"""Deep Dream (Mordvintsev et al. 2015): amplify what a layer sees, octave by octave, at the photo's resolution.

Each step computes the gradient of the objective (a layer's activation norm, or one class logit for a guided
dream, plus an optional TV prior) on tiles of a randomly rolled copy of the image, rolls the gradient back,
divides it by its mean magnitude and takes a step, clamped to [0,1]. Octaves run from the smallest scale to
the full size; the detail dreamed at one scale is carried up to the next. Each step's gradient is blurred a
little (`smooth`), which turns the net's high-frequency gradient into smooth strokes. The bundled EfficientNets
use TF "same" padding, so they run on any image size, and tiling keeps memory flat for big photos.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import engine as E
from ..display import Shows
from ..engine.transforms import gaussian_blur, luma
from ..models import ModelBundle
from ..models.layers import default_layers
from ..options.dream import DEFAULT_LAYERS, Options
from ..options.ranges import check_ranges

MIN_SIDE = 32  # octaves smaller than this are skipped (the net's receptive field would see only padding)


@dataclass
class DreamResult(Shows):
    """The dreamed images (same size as the input) and how far the objective moved. In Jupyter it shows the
    input | dream panel `deepprobe dream` writes (measured afresh when drawn)."""

    images: torch.Tensor
    losses: list[float] = field(default_factory=list)  # mean objective per step, all octaves in a row
    octave_sizes: list[tuple[int, int]] = field(default_factory=list)
    steps: int = 0
    stopped: str = "done"  # done | interrupted

    def figure(self):
        from ..display import stack
        from ..figures.synthesis import dream_panel

        bundle, photos, layers, tile = self._needs("bundle", "photos", "layers", "tile")
        target = self._context_get("target")
        steps = self._context_get("steps_per_octave")
        panels = []
        for i in range(self.images.shape[0]):
            photo, dreamed = photos[i:i + 1].cpu(), self.images[i:i + 1].cpu()
            record = measure(bundle, photo, dreamed, layers, target, tile)
            title = f"image {i} · {bundle.title} · {len(self.octave_sizes)} octaves x {steps} steps"
            panels.append(dream_panel(photo, dreamed, record, title))
        return stack(panels)


def dream(probe: ModelBundle, images: torch.Tensor, layers: Sequence[str] | str | None = None, *,
          target: int | str | None = Options.target, octaves: int = Options.octaves,
          octave_scale: float = Options.octave_scale, steps: int = Options.steps, lr: float = Options.lr,
          strength: float = Options.strength, jitter: int = Options.jitter, smooth: float = Options.smooth,
          tv: float = Options.tv, tile: int = Options.tile, seed: int = 0,
          callback: Callable[[int, int, float, E.Forward | None], None] | None = None) -> DreamResult:
    """Dream on (N,3,H,W) images in [0,1] at their own size; `target` (a class) makes a guided dream.

    Returns images of the input's size. `strength` mixes the dreamed change into the photo afterwards
    (1 = the full dream). Ctrl-C stops early and keeps what was dreamed so far (stopped = "interrupted").
    """
    check_ranges("dream", locals())
    layers = default_layers(probe, _layers(layers), DEFAULT_LAYERS)
    target = probe.class_index(target) if target is not None else None
    generator = torch.Generator().manual_seed(seed)
    base = images.detach().to(probe.device).float().clamp(0, 1)
    sizes = octave_sizes(tuple(base.shape[-2:]), octaves, octave_scale)
    scales = None
    if target is None:  # each layer's energy counts relative to the photo's own, so several layers share fairly
        norms = activation_norms(probe, _resize(base, sizes[0]), layers, tile)
        scales = [1.0 / float(norms[layer].pow(2).mean().clamp_min(1e-12)) for layer in layers]
    objective = dream_objective(layers, target, tv, scales)
    total, done, curve, stopped = steps * len(sizes), 0, [], "done"
    detail = torch.zeros_like(_resize(base, sizes[0]))
    image = base
    try:
        for size in sizes:
            scaled = _resize(base, size)
            image = (scaled + _resize(detail, size)).clamp(0, 1)
            for _ in range(steps):
                grad, loss, fwd = tiled_gradient(probe, image, objective, tile, jitter, generator)
                # the gradient blurred a little: smooth strokes instead of grain
                image = normalized_step(image, gaussian_blur(grad, smooth), lr)
                curve.append(loss)
                done += 1
                if callback is not None:
                    callback(done, total, float(loss), fwd)
            detail = image - scaled
    except KeyboardInterrupt:
        stopped = "interrupted"
    if tuple(image.shape[-2:]) != tuple(base.shape[-2:]):  # interrupted below full size: carry the detail up
        image = base + _resize(image - _resize(base, image.shape[-2:]), base.shape[-2:])
    image = (base + strength * (image - base)).clamp(0, 1)
    losses = [float(v) for v in torch.stack(curve).cpu()] if curve else []
    return DreamResult(images=image.detach(), losses=losses, octave_sizes=sizes, steps=done,
                       stopped=stopped)._attach(bundle=probe, photos=base, layers=layers, tile=tile, target=target,
                                                steps_per_octave=steps)


def measure(probe: ModelBundle, photo: torch.Tensor, dreamed: torch.Tensor, layers: Sequence[str],
            target: int | None, tile: int) -> dict:
    """How one dream (1,3,H,W) moved its photo: each layer's RMS activation before and after and their ratio,
    the layout kept (luminance correlation), and for a guided dream the target's logit and probability."""
    before = activation_norms(probe, photo, layers, tile)
    after = activation_norms(probe, dreamed, layers, tile)
    record = {
        "layers": list(layers), "target": probe.class_name(target) if target is not None else None,
        "activation_norm_before": {k: round(float(v[0]), 5) for k, v in before.items()},
        "activation_norm_after": {k: round(float(v[0]), 5) for k, v in after.items()},
        "norm_growth": {k: round(float(after[k][0] / before[k][0].clamp_min(1e-12)), 4) for k in before},
        "layout_correlation": round(float(layout_similarity(photo, dreamed)[0]), 4),
    }
    if target is not None:
        p_before = float(probe.predict(probe.prepare(photo))[0, target])
        p_after = float(probe.predict(probe.prepare(dreamed))[0, target])
        record.update(target_logit_before=round(float(target_logits(probe, photo, target, tile)[0]), 4),
                      target_logit_after=round(float(target_logits(probe, dreamed, target, tile)[0]), 4),
                      target_probability_before=round(p_before, 6), target_probability_after=round(p_after, 6))
    return record


def dream_objective(layers: Sequence[str], target: int | None, tv: float,
                    scales: Sequence[float] | None = None) -> E.Objective:
    """Sum of the layers' mean squared activations, each times its scale (or a class logit), driven up; + tv * TV.

    dream() passes scales = 1 / (the photo's own energy at that layer): the objective starts near -1 per layer,
    so no layer drowns the others and `tv` means the same for any layer.
    """
    if target is not None:
        objective = E.class_logit(target)
    else:
        scales = list(scales) if scales is not None else [1.0] * len(layers)
        objective = scales[0] * E.layer_norm(layers[0])
        for layer, scale in zip(layers[1:], scales[1:]):
            objective = objective + scale * E.layer_norm(layer)
    return objective + tv * E.total_variation(2) if tv else objective


def octave_sizes(size: tuple[int, int], octaves: int, scale: float) -> list[tuple[int, int]]:
    """(H,W) of each octave, smallest first, ending at `size`; octaves under MIN_SIDE pixels are dropped."""
    h, w = size
    sizes = []
    for i in reversed(range(max(1, octaves))):
        s = (round(h / scale ** i), round(w / scale ** i))
        if min(s) >= min(MIN_SIDE, h, w):
            sizes.append(s)
    return sizes


def tiled_gradient(probe: ModelBundle, image: torch.Tensor, objective: E.Objective, tile: int, jitter: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, E.Forward | None]:
    """Gradient of the objective w.r.t. the image, computed tile by tile on a randomly rolled copy.

    The roll (up to `jitter` pixels, or half a tile when the image is tiled, so seams move every step) is
    undone on the gradient. Each tile's loss is weighted by its share of the image, so the tiled gradient
    equals the whole-image one for mean-type objectives. Only one tile's activations are alive at a time,
    so memory is bounded by the tile, not the photo. Returns (grad, mean loss, last tile's Forward).
    """
    h, w = image.shape[-2:]
    tiled = bool(tile) and (h > tile or w > tile)
    reach = max(jitter, tile // 2) if tiled else jitter
    dy, dx = (int(v) for v in torch.randint(-reach, reach + 1, (2,), generator=generator)) if reach else (0, 0)
    rolled = torch.roll(image, shifts=(dy, dx), dims=(2, 3))
    grad = torch.zeros_like(image)
    loss = torch.zeros((), device=image.device)
    fwd = None
    for ys in tile_slices(h, tile):
        for xs in tile_slices(w, tile):
            piece = rolled[:, :, ys, xs].detach().requires_grad_(True)
            share = piece.shape[-2] * piece.shape[-1] / (h * w)
            with torch.enable_grad(), _autocast(probe):
                per_image, fwd = E.evaluate(probe, piece, objective)
            (per_image.float().sum() * share).backward()
            grad[:, :, ys, xs] = piece.grad
            loss = loss + per_image.detach().float().mean() * share
    return torch.roll(grad, shifts=(-dy, -dx), dims=(2, 3)), loss, fwd


def tile_slices(length: int, tile: int) -> list[slice]:
    """Tiles covering 0..length; none is under half a tile (a short remainder joins the last tile)."""
    if not tile or length <= tile:
        return [slice(0, length)]
    starts = list(range(0, length, tile))
    if length - starts[-1] < tile // 2:
        starts.pop()
    ends = starts[1:] + [length]
    return [slice(a, b) for a, b in zip(starts, ends)]


def _autocast(probe: ModelBundle):
    """bfloat16 autocast on CUDA when `--amp` asked for it (as the engine's loop does)."""
    import contextlib

    if probe.notes.get("amp") and probe.device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def normalized_step(image: torch.Tensor, grad: torch.Tensor, lr: float) -> torch.Tensor:
    """Deep Dream's step: descend the gradient divided by its mean magnitude per image, clamp to [0,1]."""
    scale = grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return (image - lr * grad / scale).clamp(0, 1)


@torch.no_grad()
def activation_norms(probe: ModelBundle, images: torch.Tensor, layers: Sequence[str] | str,
                     tile: int = Options.tile) -> dict[str, torch.Tensor]:
    """RMS activation per image of each layer, by a fresh forward (tile by tile on big images), (N,) each."""
    layers = _layers(layers)
    images = images.to(probe.device).float()
    h, w = images.shape[-2:]
    sums = {layer: torch.zeros(images.shape[0], device=probe.device) for layer in layers}
    for ys in tile_slices(h, tile):
        for xs in tile_slices(w, tile):
            piece = images[:, :, ys, xs]
            share = piece.shape[-2] * piece.shape[-1] / (h * w)
            fwd = E.forward(probe, piece, layers, need_logits=False)
            for layer in layers:
                sums[layer] += fwd[layer].float().pow(2).flatten(1).mean(1) * share
    return {layer: value.sqrt().cpu() for layer, value in sums.items()}


@torch.no_grad()
def target_logits(probe: ModelBundle, images: torch.Tensor, target: int, tile: int = Options.tile) -> torch.Tensor:
    """The target class's logit on the image at its own size, (N,): what a guided dream drives up.

    The nets are fully convolutional with global pooling, so any size works; on big images it is the
    area-weighted mean over the same tiles the dream used (memory stays flat).
    """
    images = images.to(probe.device).float()
    h, w = images.shape[-2:]
    total = torch.zeros(images.shape[0], device=probe.device)
    for ys in tile_slices(h, tile):
        for xs in tile_slices(w, tile):
            piece = images[:, :, ys, xs]
            total += probe.net(piece)[:, target].float() * (piece.shape[-2] * piece.shape[-1] / (h * w))
    return total.cpu()


@torch.no_grad()
def layout_similarity(a: torch.Tensor, b: torch.Tensor, side: int = 24) -> torch.Tensor:
    """Pearson correlation of the two images' luminance, heavily downsampled (short side `side`), (N,).

    Near 1 when the dream keeps the input's composition; unrelated images score near 0.
    """
    def small(x: torch.Tensor) -> torch.Tensor:
        x = x.float().cpu()
        lum = luma(x)
        h, w = lum.shape[-2:]
        k = side / min(h, w)
        size = (max(1, round(h * k)), max(1, round(w * k)))
        return F.interpolate(lum, size=size, mode="area").flatten(1)

    sa, sb = small(a), small(b)
    sa = sa - sa.mean(1, keepdim=True)
    sb = sb - sb.mean(1, keepdim=True)
    return (sa * sb).sum(1) / (sa.norm(dim=1) * sb.norm(dim=1)).clamp_min(1e-12)


def _layers(layers: Sequence[str] | str | None) -> list[str]:
    if layers is None:
        return list(Options().layer)
    layers = [layers] if isinstance(layers, str) else list(layers)
    return layers or list(Options().layer)


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
