"""Activation maximization (Olah et al. 2017, lucid/lucent): find an image that drives one unit as high as it goes.

A unit is a class logit, the mean of one channel of a layer, or one cell (neuron) of a channel. Several units
run as one batch, image i optimizing unit i only (the model is in eval mode, so the images do not interact).
Images are Fourier-parameterized with decorrelated colour and a sigmoid, and every step sees a randomly padded,
jittered, scaled and rotated copy, so results show structure rather than high-frequency noise. Each unit's
starting spectrum is seeded from (seed, unit), so a unit gives the same image alone or inside a batch.
"""
from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import engine as E
from ..display import Shows
from ..errors import DeepprobeError
from ..models import ModelBundle
from ..options.maximize import NEURON_CENTRE, Options
from ..options.ranges import check_ranges

NATURAL_NEURON = "max over the map's cells"  # how a neuron's best on a photo is read (it may sit anywhere)


@dataclass(frozen=True)
class Unit:
    """One thing to maximize: a class logit, a channel's mean, or one cell of a channel (neuron)."""

    kind: str  # class | channel | neuron
    index: int  # class index or channel index
    layer: str | None = None
    y: int | None = None  # neuron cell in the layer's map at the optimized size (None: centre)
    x: int | None = None
    label: str = ""  # class name, for captions
    prefix: int | None = None  # a ViT block's (N,T,C) tokens: tokens before the patch grid; None: a (N,C,H,W) map

    @property
    def name(self) -> str:
        if self.kind == "class":
            return self.label or f"class {self.index}"
        where = f" @ ({self.y},{self.x})" if self.kind == "neuron" else ""
        return f"{self.layer} ch {self.index}{where}"

    @property
    def key(self) -> str:
        """Stable identity (seeds the unit's starting image, names its file)."""
        if self.kind == "class":
            return f"class{self.index}"
        return f"{self.layer}_ch{self.index}" + (f"_y{self.y}x{self.x}" if self.kind == "neuron" else "")

    def objective(self, map_size: tuple[int, int] | None = None) -> E.Objective:
        if self.kind == "class":
            return E.class_logit(self.index)
        if self.kind == "channel":
            base = E.channel(self.layer, self.index)
        else:
            base = E.neuron(self.layer, self.index, self.y, self.x, map_size=map_size)
        if self.prefix is None:
            return base
        return E.Objective(lambda f: base(self._as_map(f)), base.name, base.layers)

    def _as_map(self, fwd: E.Forward) -> E.Forward:
        """The forward pass with this unit's layer as a (N,C,H,W) map (ViT tokens over their patch grid)."""
        if self.prefix is None:
            return fwd
        return E.Forward(fwd.images, fwd.logits, {self.layer: token_map(fwd[self.layer], self.prefix)}, fwd.bundle)

    def read(self, fwd: E.Forward, natural: bool = False) -> torch.Tensor:
        """The unit's activation per image, (N,), on an untransformed forward pass.

        natural=True (photos): a neuron reads the largest cell of its channel anywhere in the map, because a
        photo's best patch for that unit can sit anywhere (the convolution is the same at every cell).
        """
        if self.kind == "class":
            return fwd.logits[:, self.index].float()
        act = self._as_map(fwd)[self.layer][:, self.index].float()
        if self.kind == "channel":
            return act.flatten(1).mean(1)
        if natural:
            return act.flatten(1).amax(1)
        return act[:, self.y, self.x]


@dataclass
class MaximizeResult(Shows):
    """Images that drive each unit, the activation each reached, and (optionally) the photos' best. In Jupyter
    it shows `deepprobe maximize`'s captioned grid."""

    images: torch.Tensor  # (N,3,size,size) in [0,1], row i for units[i]
    units: list[Unit]
    activations: list[float]  # unit i's activation on image i (no transforms)
    losses: list[float] = field(default_factory=list)  # mean loss per step
    steps: int = 0
    stopped: str = "done"  # done | interrupted | nan
    natural: list[dict] | None = None  # per unit: best activation over the photos, which photo, ratio

    def records(self) -> list[dict]:
        """One plain dict per unit (what the CLI writes to JSON)."""
        out = []
        for i, unit in enumerate(self.units):
            rec = {"unit": unit.name, "kind": unit.kind, "layer": unit.layer, "index": unit.index,
                   "activation": round(self.activations[i], 5)}
            if unit.kind == "class":
                rec["class"] = unit.label
            if unit.kind == "neuron":
                rec["cell"] = [unit.y, unit.x]
            if self.natural is not None:
                rec.update(self.natural[i])
            out.append(rec)
        return out

    def figure(self):
        from ..figures.synthesis import maximize_grid

        (title,) = self._needs("model_title")
        size = int(self.images.shape[-1])
        return maximize_grid(self.images, self.records(), size,
                             f"maximize · {title} · {size}px · {self.steps} steps")


def parse_channels(values: Sequence[int | str] | int | str | None) -> list[int]:
    """Channel indices from ints, "12", "0-7" or "0,3,5" (order kept, duplicates dropped)."""
    if values is None:
        return []
    values = [values] if isinstance(values, (int, str)) else list(values)
    out: list[int] = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
            if not match:
                raise DeepprobeError(f"--channel takes an index or a range like 0-7, got {part!r}")
            lo, hi = int(match[1]), int(match[2] or match[1])
            if hi < lo:
                raise DeepprobeError(f"--channel range {part!r} runs backwards")
            out.extend(range(lo, hi + 1))
    return list(dict.fromkeys(out))


def parse_neuron(value: str | Sequence[int] | None) -> tuple[int | None, int | None] | None:
    """None (no neuron), (None, None) for the centre, or (y, x) from "Y,X"."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() in NEURON_CENTRE:
            return (None, None)
        match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", value)
        if not match:
            raise DeepprobeError(f"--neuron takes Y,X (a cell of the layer's map) or 'centre', got {value!r}")
        return int(match[1]), int(match[2])
    y, x = value
    return int(y), int(x)


def token_map(tokens: torch.Tensor, prefix: int) -> torch.Tensor:
    """(N,T,C) tokens of a vision transformer block -> (N,C,h,w) over its square patch grid, the `prefix` tokens
    (class token, registers) left out: a channel of a ViT is then read like a CNN's."""
    patches = tokens[:, prefix:]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise DeepprobeError(f"{patches.shape[1]} patch tokens do not make a square grid; maximize a square image")
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


def layer_shape(probe: ModelBundle, layer: str, size: int) -> tuple[int, int, int]:
    """(C,H,W) of the layer's output for a size x size input: a (N,C,H,W) map, or a ViT block's tokens."""
    return layer_output(probe, layer, size)[:3]


def layer_output(probe: ModelBundle, layer: str, size: int) -> tuple[int, int, int, int | None]:
    """(C, H, W, prefix): prefix None for a (N,C,H,W) map; for (N,T,C) tokens, those before the patch grid
    (the model's declared count, e.g. timm's num_prefix_tokens, else what a square grid leaves)."""
    probe.layer(layer)  # unknown names fail here, with suggestions
    with torch.no_grad():
        probe_input = torch.full((1, 3, size, size), 0.5, device=probe.device)
        act = E.forward(probe, probe_input, [layer], need_logits=False)[layer]
    if act.dim() == 3:
        declared = getattr(probe.inner, "num_prefix_tokens", None)
        prefix = int(declared) if declared is not None else act.shape[1] - math.isqrt(act.shape[1]) ** 2
        grid = token_map(act, prefix)
        return int(grid.shape[1]), int(grid.shape[2]), int(grid.shape[3]), prefix
    if act.dim() != 4:
        raise DeepprobeError(f"layer {layer!r} gives shape {tuple(act.shape)}, not a (N,C,H,W) map or (N,T,C) "
                             "tokens; pick a convolutional layer or a transformer block (see `deepprobe layers`)")
    return int(act.shape[1]), int(act.shape[2]), int(act.shape[3]), None


def native_side(probe: ModelBundle) -> int:
    """The side of the square images maximize draws when no size is given: the model's input size (its longer
    side), 224 for a model of any input size."""
    return max(probe.input_size) if probe.input_size else 224


def resolve_units(probe: ModelBundle, target=None, layer: str | None = None, channel=None, neuron=None,
                  size: int | None = Options.size) -> list[Unit]:
    """Check what the user asked for and turn it into Units (classes first, then channels)."""
    size = size or native_side(probe)
    targets = [] if target is None else ([target] if isinstance(target, (int, str)) else list(target))
    channels = parse_channels(channel)
    cell = parse_neuron(neuron)
    if not targets and not channels:
        raise DeepprobeError("nothing to maximize: give --target CLASS, or --layer L --channel K "
                             "(optionally --neuron Y,X)")
    if channels and layer is None:
        raise DeepprobeError("--channel needs --layer (see `deepprobe layers`)")
    if cell is not None and not channels:
        raise DeepprobeError("--neuron needs --layer and --channel")
    if layer is not None and not channels:
        raise DeepprobeError(f"--layer {layer} needs --channel K (or a range like 0-7)")
    units: list[Unit] = []
    if targets:
        from ..models.bundle import require_classifier

        require_classifier(probe, "maximize --target")
        for t in targets:
            index = probe.class_index(t)
            units.append(Unit("class", index, label=probe.class_name(index)))
    if channels:
        count, h, w, prefix = layer_output(probe, layer, size)
        bad = [c for c in channels if c >= count]
        if bad:
            raise DeepprobeError(f"channel {bad[0]} is out of range: layer {layer!r} has {count} channels "
                                 f"(0-{count - 1})")
        y = x = None
        if cell is not None:
            y, x = (h // 2, w // 2) if cell == (None, None) else cell
            if not (0 <= y < h and 0 <= x < w):
                raise DeepprobeError(f"neuron ({y},{x}) is outside layer {layer!r}'s {h}x{w} map at "
                                     f"{size} px (Y in 0-{h - 1}, X in 0-{w - 1})")
        kind = "channel" if cell is None else "neuron"
        units += [Unit(kind, c, layer=layer, y=y, x=x, prefix=prefix) for c in channels]
    return list(dict.fromkeys(units))


def maximize(probe: ModelBundle, target=None, *, layer: str | None = None, channel=None, neuron=None,
             units: Sequence[Unit] | None = None, steps: int = Options.steps, lr: float = Options.lr,
             size: int | None = Options.size, decay_power: float = Options.decay_power,
             robustness: float = Options.robustness, seed: int = 0, photos: torch.Tensor | None = None,
             photo_names: Sequence[str] | None = None,
             callback: Callable[[int, int, float, E.Forward | None], None] | None = None) -> MaximizeResult:
    """Find images that maximize each unit: `target` (class names/indices), or `layer` + `channel` (ints or
    "0-7"), with `neuron` ("Y,X", (y, x) or "centre") for one cell. All units run as one batch.

    photos: (M,3,H,W) in [0,1] (e.g. probe.load_image of the example photos); each unit's best activation over
    them is reported beside the one reached (`result.natural`), measured at the same size as the result.
    """
    check_ranges("maximize", locals())
    size = size or native_side(probe)
    units = list(units) if units is not None else resolve_units(probe, target, layer, channel, neuron, size)
    map_sizes = {u.layer: layer_shape(probe, u.layer, size)[1:] for u in units if u.kind == "neuron"}
    objective = E.rowwise([u.objective(map_sizes.get(u.layer)) for u in units])
    param = fourier_image(units, size, decay_power, seed, probe.device)
    generator = torch.Generator().manual_seed(seed)
    # lucent's pixel sizes suit a 224-px network; a smaller network's objects are smaller by its input's ratio
    pixels = min(1.0, native_side(probe) / 224)
    transforms = E.standard_robustness(generator, robustness, pixels) if robustness > 0 else []
    res = E.optimize(probe, param, objective, steps=steps, lr=lr, optimizer="adam", transforms=transforms,
                     callback=callback, check_every=min(10, steps))
    # The best-loss image was scored on a random transform; the last iterate is what the optimization settled on.
    images = res.final if res.stopped != "nan" else res.images
    activations = [float(v) for v in unit_activations(probe, units, images)]
    natural = natural_best(probe, units, photos, size, photo_names) if photos is not None else None
    if natural is not None:
        for rec, value in zip(natural, activations):
            best = rec["natural_best"]
            rec["ratio"] = round(value / best, 4) if best > 0 else None
            rec["exceeds_photos"] = value > best
    return MaximizeResult(images=images.detach().cpu(), units=units, activations=activations, losses=res.losses,
                          steps=res.steps, stopped=res.stopped, natural=natural)._attach(model_title=probe.title)


def fourier_image(units: Sequence[Unit], size: int, decay_power: float, seed: int,
                  device: torch.device | str) -> E.FourierImage:
    """A batch of Fourier images; row i starts from a spectrum seeded by (seed, unit i) alone."""
    # every row is overwritten below; its own generator keeps the first draw off the caller's global one
    param = E.FourierImage(len(units), size, size, decay_power=decay_power, device=device, generator=torch.Generator())
    with torch.no_grad():
        for i, unit in enumerate(units):
            gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{unit.key}".encode()))
            row = E.FourierImage(1, size, size, decay_power=decay_power, generator=gen)
            param.spectrum[i].copy_(row.spectrum[0].to(param.spectrum.device))
    return param


@torch.no_grad()
def unit_activations(probe: ModelBundle, units: Sequence[Unit], images: torch.Tensor) -> torch.Tensor:
    """Unit i's activation on image i, (N,), without any transform."""
    fwd = _forward(probe, units, images)
    return torch.stack([u.read(fwd)[i] for i, u in enumerate(units)]).cpu()


@torch.no_grad()
def natural_best(probe: ModelBundle, units: Sequence[Unit], photos: torch.Tensor, size: int,
                 names: Sequence[str] | None = None) -> list[dict]:
    """Each unit's highest activation over the photos (resized to `size` when needed) and which photo gave it."""
    photos = photos.to(probe.device).float()
    if tuple(photos.shape[-2:]) != (size, size):
        photos = F.interpolate(photos, size=(size, size), mode="bicubic", align_corners=False,
                               antialias=True).clamp(0, 1)
    names = list(names) if names is not None else [f"photo {i}" for i in range(photos.shape[0])]
    values = []
    for start in range(0, photos.shape[0], 8):
        fwd = _forward(probe, units, photos[start:start + 8])
        values.append(torch.stack([u.read(fwd, natural=True) for u in units], 1))
    table = torch.cat(values).cpu()  # (photos, units)
    best, which = table.max(0)
    return [{"natural_best": round(float(b), 5), "natural_photo": names[int(w)]} for b, w in zip(best, which)]


def _forward(probe: ModelBundle, units: Sequence[Unit], images: torch.Tensor) -> E.Forward:
    layers = list(dict.fromkeys(u.layer for u in units if u.layer))
    need_logits = any(u.kind == "class" for u in units)
    return E.forward(probe, images.to(probe.device).float(), layers, need_logits=need_logits)
