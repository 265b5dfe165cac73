"""Neural style transfer (Gatys, Ecker & Bethge 2016) on the engine, tuned for non-VGG networks.

Loss = style_weight * mean over style layers of ||G(x) - G*||^2 / ||G*||^2 (G* = the blend of the style
images' Grams) + content_weight * ||phi(x) - phi(content)||^2 / ||phi(content)||^2 + tv * TV(x). Dividing
each Gram error by the style Gram's energy keeps layers of very different magnitudes equally heard, which
VGG-tuned weights otherwise do by hand. Optimizing through a smooth ReLU6 keeps gradients alive where the
clamp saturates. `preserve_colors` runs on luminance only (Gatys et al. 2017) and puts back the content's
chroma. The result is judged by a *different* network (`measure`), so a good score is not an artefact of the
optimizing net.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import engine as E
from ..display import Shows
from ..errors import DeepprobeError
from ..models import ModelBundle
from ..models.layers import default_layers
from ..options.style import (CONTENT_LAYER, INITS, MEASURE_CONTENT_LAYER, MEASURE_STYLE_LAYERS, OPTIMIZERS,
                             STYLE_LAYERS, Options, lr_for)
from ..options.ranges import check_ranges
from .fool_params import BoxPixels

# RGB <-> YIQ (NTSC): Y is luminance, I and Q carry the colour.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
# The model sees the image framed by this many pixels of mid-grey (zero after the Lite models' normalization).
# With TF "same" padding the first row/column reaches deep layers through fewer paths than the rest, and the
# optimizer paints a stripe there; the frame moves that row into the fixed grey, and the targets are read
# through the same frame. A reflect pad only moves the stripe inward (to the mirrored row).
EDGE_PAD = 16
EDGE_MODE = "constant"


@dataclass
class StyleResult(Shows):
    """The stylized image at the working size, the content it was painted over, and how the run went. In Jupyter
    it shows `deepprobe style`'s content | style(s) | result panel (judged by no second network: call `measure`
    for those numbers)."""

    images: torch.Tensor  # (1,3,h,w) in [0,1]
    content: torch.Tensor  # the content image at the working size
    styles: list[torch.Tensor]  # the style images at the working size (colour-matched when preserve_colors)
    blend: list[float]  # normalized style weights
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    stopped: str = "done"
    message: str | None = None

    def figure(self):
        from ..figures.synthesis import style_panel

        title, optimizer, kept = self._needs("model_title", "optimizer", "preserve_colors")
        names = [f"{i + 1}" for i in range(len(self.styles))]
        return style_panel(self.content, self.styles, self.images, "content", names, self.blend, {},
                           f"style transfer · {title} · {optimizer} {self.steps} steps"
                           + (" · colours kept" if kept else ""))


def style(probe: ModelBundle, content: torch.Tensor, styles: Sequence[torch.Tensor] | torch.Tensor, *,
          style_layers: Sequence[str] = STYLE_LAYERS, content_layer: str = Options.content_layer,
          style_weight: float = Options.style_weight, content_weight: float = Options.content_weight,
          tv: float = Options.tv, size: int | None = Options.size, init: str = Options.init,
          optimizer: str = Options.optimizer, steps: int = Options.steps, lr: float | None = Options.lr,
          style_blend: Sequence[float] | str | None = Options.style_blend,
          preserve_colors: bool = Options.preserve_colors,
          smooth: bool = Options.smooth, seed: int = 0,
          callback: Callable[[int, int, float, E.Forward | None], None] | None = None) -> StyleResult:
    """Paint the style image(s) over `content` ((1,3,H,W) in [0,1], any size); returns the result at `size`.

    Several style images mix by `style_blend` (weights such as [0.7, 0.3] or "0.7,0.3"; equal when None):
    the target of each style layer is the weighted sum of their Gram matrices. Ctrl-C stops the optimization
    and returns the best image so far (stopped = "interrupted").
    """
    check_ranges("style", locals())
    if init not in INITS:
        raise DeepprobeError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if optimizer not in OPTIMIZERS:
        raise DeepprobeError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    styles = [styles] if isinstance(styles, torch.Tensor) else list(styles)
    if not styles:
        raise DeepprobeError("give at least one style image")
    style_layers = default_layers(probe, list(style_layers), STYLE_LAYERS, deepest_only=False)
    content_layer = default_layers(probe, [content_layer], (CONTENT_LAYER,))[0]
    blend = blend_weights(len(styles), style_blend)
    device = probe.device
    content = fit_size(content.to(device).float(), size)
    styles = [fit_size(s.to(device).float(), size) for s in styles]
    if preserve_colors:
        styles = [match_luminance(s, content) for s in styles]
        work_content, work_styles = luminance(content), [luminance(s) for s in styles]
    else:
        work_content, work_styles = content, styles
    net = smoothed(probe) if smooth else probe
    border = E.pad(EDGE_PAD, mode=EDGE_MODE) if EDGE_PAD else None
    objective = style_objective(net, work_content, work_styles, blend, list(style_layers), content_layer,
                                style_weight, content_weight, tv, border)
    generator = torch.Generator().manual_seed(seed)
    start = work_content if init == "content" else torch.rand(work_content.shape, generator=generator).to(device)
    # L-BFGS must see the [0,1] box inside the function (a clamp after each step breaks its curvature pairs)
    param = BoxPixels(start) if optimizer == "lbfgs" else E.Pixels(start)
    res = E.optimize(net, param, objective, steps=steps, lr=lr_for(optimizer, lr), optimizer=optimizer,
                     transforms=[border] if border else (), callback=callback, check_every=10)
    images = res.images.clamp(0, 1)
    if preserve_colors:
        images = with_chroma_of(images, content)
    return StyleResult(images=images.detach(), content=content, styles=styles, blend=blend, losses=res.losses,
                       steps=res.steps, stopped=res.stopped,
                       message=res.message)._attach(model_title=probe.title, optimizer=optimizer,
                                                    preserve_colors=preserve_colors)


def style_objective(probe: ModelBundle, content: torch.Tensor, styles: Sequence[torch.Tensor], blend: Sequence[float],
                    style_layers: Sequence[str], content_layer: str, style_weight: float, content_weight: float,
                    tv: float, border: Callable[[torch.Tensor], torch.Tensor] | None = None) -> E.Objective:
    """The Gatys loss as one engine objective (see the module docstring).

    `border` is the transform the optimization applies to the model input (a reflect pad); the targets are
    read through it too, so the style and content statistics compare like with like.
    """
    border = border or (lambda x: x)
    targets = style_grams(probe, [border(s) for s in styles], blend, style_layers)
    ref = E.forward(probe, border(content), [content_layer], need_logits=False)[content_layer]
    objective = content_weight * E.feature_match(content_layer, ref)
    for layer, target in targets.items():
        energy = float(target.pow(2).mean().clamp_min(1e-12))
        objective = objective + (style_weight / (len(targets) * energy)) * E.gram_match(layer, target)
    return objective + tv * E.total_variation(2) if tv else objective


@torch.no_grad()
def style_grams(probe: ModelBundle, styles: Sequence[torch.Tensor], blend: Sequence[float],
                layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """The blended Gram matrix of each layer: sum_i w_i G_i, (1,C,C)."""
    grams: dict[str, torch.Tensor] = {}
    for image, weight in zip(styles, blend):
        fwd = E.forward(probe, image, layers, need_logits=False)
        for layer in layers:
            g = E.gram(fwd[layer].float()) * weight
            grams[layer] = grams[layer] + g if layer in grams else g
    return grams


def blend_weights(count: int, weights: Sequence[float] | str | None) -> list[float]:
    """Normalized non-negative weights for `count` style images (equal when not given); "0.7,0.3" works too."""
    if isinstance(weights, str):
        try:
            weights = [float(w) for w in weights.replace(" ", "").split(",") if w]
        except ValueError:
            raise DeepprobeError(f"--style-blend must be numbers separated by commas, e.g. 0.7,0.3; got {weights!r}"
                                 ) from None
    if not weights:
        return [1.0 / count] * count
    if len(weights) != count:
        raise DeepprobeError(f"--style-blend has {len(weights)} weights for {count} style image(s)")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise DeepprobeError("--style-blend weights must be non-negative and not all zero")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def fit_size(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """Resize so the longest side is `size` (aspect kept); None keeps the image as it is."""
    if size is None:
        return image
    h, w = image.shape[-2:]
    k = size / max(h, w)
    target = (max(1, round(h * k)), max(1, round(w * k)))
    if target == (h, w):
        return image
    return F.interpolate(image, size=target, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


# ----- colour: luminance-only transfer ----------------------------------------------------------------
def _yiq(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("dc,nchw->ndhw", _RGB_TO_YIQ.to(image), image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """The Y channel repeated to three channels (a grey image the network can read)."""
    return _yiq(image)[:, :1].expand(-1, 3, -1, -1).contiguous()


def match_luminance(style_image: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Shift and scale the style's luminance to the content's mean and spread (Gatys et al. 2017)."""
    ys, yc = _yiq(style_image)[:, :1], _yiq(content)[:, :1]
    matched = (ys - ys.mean()) / ys.std().clamp_min(1e-6) * yc.std() + yc.mean()
    return (style_image + (matched - ys)).clamp(0, 1)


def with_chroma_of(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`image`'s luminance with `reference`'s I and Q channels, back in RGB."""
    yiq = torch.cat([_yiq(image)[:, :1], _yiq(reference)[:, 1:]], dim=1)
    return torch.einsum("dc,nchw->ndhw", _YIQ_TO_RGB.to(image), yiq).clamp(0, 1)


def chroma(image: torch.Tensor) -> torch.Tensor:
    """The I and Q (colour) channels, (N,2,H,W)."""
    return _yiq(image)[:, 1:]


def chroma_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of the I and Q channels of two same-size images (0 = the same colours)."""
    return float((chroma(a.float()) - chroma(b.to(a.device).float())).abs().mean())


# ----- smooth activations -----------------------------------------------------------------------------
class SmoothReLU6(nn.Module):
    """softplus(x) - softplus(x - 6) with a sharp beta: ReLU6's shape, but with gradients everywhere."""

    def __init__(self, beta: float = 4.0):
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x, self.beta) - F.softplus(x - 6.0, self.beta)


def smoothed(probe: ModelBundle) -> ModelBundle:
    """A copy of the bundle whose ReLU/ReLU6 are smooth (the original model is left untouched)."""
    net = copy.deepcopy(probe.net)
    replaced = 0
    for module in list(net.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU6):
                setattr(module, name, SmoothReLU6())
                replaced += 1
            elif isinstance(child, nn.ReLU):
                setattr(module, name, nn.Softplus(beta=4.0))
                replaced += 1
    if not replaced:
        return probe
    return dataclasses.replace(probe, net=net)


# ----- measurement with another network --------------------------------------------------------------
@torch.no_grad()
def measure(judge: ModelBundle, result: torch.Tensor, content: torch.Tensor, styles: Sequence[torch.Tensor],
            blend: Sequence[float], style_layers: Sequence[str] = MEASURE_STYLE_LAYERS,
            content_layer: str = MEASURE_CONTENT_LAYER) -> dict[str, float]:
    """Style (Gram) and content distances of result, content and style, read by `judge`.

    style_ratio = gram_distance(result) / gram_distance(content): well below 1 when the style took.
    content_ratio = content_distance(result) / content_distance(style): below 1 when the content survived.
    Gram distance: mean over layers of ||G - G*||^2 / ||G*||^2; content distance: ||phi - phi_c||^2 / ||phi_c||^2.
    """
    dev = judge.device
    result, content = result.to(dev).float(), content.to(dev).float()
    styles = [s.to(dev).float() for s in styles]
    targets = style_grams(judge, styles, blend, style_layers)
    layers = list(dict.fromkeys([*style_layers, content_layer]))

    def features(image: torch.Tensor) -> dict[str, torch.Tensor]:
        return E.forward(judge, image, layers, need_logits=False).activations

    def gram_distance(feats: dict[str, torch.Tensor]) -> float:
        errors = [(E.gram(feats[l].float()) - targets[l]).pow(2).sum() / targets[l].pow(2).sum().clamp_min(1e-12)
                  for l in style_layers]
        return float(torch.stack(errors).mean())

    ref = features(content)[content_layer].float()

    def content_distance(feats: dict[str, torch.Tensor]) -> float:
        return float((feats[content_layer].float() - ref).pow(2).sum() / ref.pow(2).sum().clamp_min(1e-12))

    f_result, f_content = features(result), features(content)
    # each style image, at the content's shape, stands for "the style's layout instead of the content's"
    style_distance = sum(w * content_distance(features(F.interpolate(s, size=content.shape[-2:], mode="bilinear",
                                                                     align_corners=False, antialias=True)))
                         for s, w in zip(styles, blend))
    out = {
        "gram_distance_result": gram_distance(f_result),
        "gram_distance_content": gram_distance(f_content),
        "content_distance_result": content_distance(f_result),
        "content_distance_style": float(style_distance),
    }
    out["style_ratio"] = out["gram_distance_result"] / max(out["gram_distance_content"], 1e-12)
    out["content_ratio"] = out["content_distance_result"] / max(out["content_distance_style"], 1e-12)
    return out
