"""Pixel attributions through captum: saliency, integrated gradients, SmoothGrad, occlusion, guided backprop.

Each method returns a raw (N,H,W) map at the input's size; `explain()` scales it to [0,1]. Channels are
reduced so that every map reads "how much this pixel matters":
- gradient maps (saliency, smoothgrad, guided-backprop): the largest absolute value over the colour channels
  (Simonyan et al. 2014);
- integrated gradients: the absolute value of the channel sum (attributions add up, so the sum over channels
  is the pixel's attribution; its size is its importance);
- these four are spiky, so each map is capped at its 99th percentile (`clip_outliers`, as captum's
  visualizer does) before `explain()` scales it;
- occlusion: the channel sum, signed (the drop of the target logit when the window covers the pixel;
  pixels whose occlusion raises the logit end up at 0 after scaling).
Method options are named like the CLI flags; their defaults live in deepprobe.options.explain. Memory stays
bounded: at most `internal_batch` forward passes are evaluated together, whatever the steps or samples.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from ..device import caller_random_state
from ..errors import DeepprobeError
from ..options.explain import Options

_D = Options()
CLIP_TOP = 0.01  # share of the largest pixel values capped in the spiky pixel-gradient maps


def _no_layer(method: str, layer) -> None:
    if layer not in (None, ""):
        raise DeepprobeError(f"{method} attributes to input pixels; --layer does not apply to it")


def _positive(name: str, value, minimum: int = 1) -> int:
    value = int(value)
    if value < minimum:
        raise DeepprobeError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")
    return value


def _abs_max(attr: torch.Tensor) -> torch.Tensor:
    return clip_outliers(attr.detach().abs().amax(dim=1))


def clip_outliers(maps: torch.Tensor, top: float = CLIP_TOP) -> torch.Tensor:
    """Cap each (h,w) map at its (1 - top) quantile, as captum's visualizer does (outlier_perc).

    Why: gradient maps are spiky; a few pixels would take the whole [0,1] range after min-max scaling and
    the rest would read as zero. Only the order among the top `top` share of pixels is lost.
    """
    flat = maps.flatten(1)
    cap = torch.quantile(flat.float(), 1.0 - top, dim=1, keepdim=True)
    return torch.minimum(flat, cap.to(flat.dtype)).view_as(maps)


def _input(x: torch.Tensor) -> torch.Tensor:
    """A leaf copy that requires grad (captum warns and flips the flag on the caller's tensor otherwise)."""
    return x.detach().requires_grad_(True)


def _chunk(internal_batch: int, n: int) -> int:
    """How many steps/samples/windows per forward pass so that each pass holds about `internal_batch` images."""
    return max(1, _positive("internal_batch", internal_batch) // max(1, n))


# ------------------------------------------------------------------------------------------ methods
def saliency(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """|d logit / d pixel|, largest over the colour channels (Simonyan et al. 2014)."""
    from captum.attr import Saliency

    _no_layer("saliency", layer)
    return _abs_max(Saliency(probe.net).attribute(_input(x), target=targets, abs=True))


def integrated_gradients(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None,
                         steps: int = _D.steps, internal_batch: int = _D.internal_batch) -> torch.Tensor:
    """Integrated gradients (Sundararajan et al. 2017) from a black image, |sum over channels|."""
    from captum.attr import IntegratedGradients

    _no_layer("ig", layer)
    steps = _positive("steps", steps, 2)
    attr = IntegratedGradients(probe.net).attribute(
        _input(x), baselines=torch.zeros_like(x), target=targets, n_steps=steps,
        internal_batch_size=max(x.shape[0], _positive("internal_batch", internal_batch)))
    return clip_outliers(attr.detach().sum(1).abs())


def smoothgrad(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None,
               samples: int = _D.samples, noise: float = _D.noise,
               internal_batch: int = _D.internal_batch) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies, then |.| max over channels.

    The signed gradients are averaged (noise cancels out, which is the point), and only then made absolute.
    """
    from captum.attr import NoiseTunnel, Saliency

    _no_layer("smoothgrad", layer)
    samples = _positive("samples", samples)
    if not float(noise) > 0:
        raise DeepprobeError(f"--noise must be positive, got {noise}")
    with caller_random_state():  # captum draws the noise from the global generator: the caller's, left as it was
        attr = NoiseTunnel(Saliency(probe.net)).attribute(
            _input(x), nt_type="smoothgrad", nt_samples=samples,
            nt_samples_batch_size=_chunk(internal_batch, x.shape[0]), stdevs=float(noise), target=targets, abs=False)
    return _abs_max(attr)


def occlusion(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None,
              window: int = _D.window, stride: int = _D.stride,
              internal_batch: int = _D.internal_batch) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus 2014): the target logit's drop when a black window covers each pixel.

    `window` 0 means 1/7 of the short side (32 px at 224: the stride of a CNN's last feature map);
    `stride` 0 means half the window.
    """
    from captum.attr import Occlusion

    _no_layer("occlusion", layer)
    short = min(int(x.shape[-2]), int(x.shape[-1]))
    window = int(window) or max(2, round(short / 7))
    stride = int(stride) or max(1, window // 2)
    if not 1 <= window <= short:
        raise DeepprobeError(f"--window must be between 1 and the image's short side ({short}), got {window}")
    if not 1 <= stride <= window:
        raise DeepprobeError(f"--stride must be between 1 and the window ({window}), got {stride}")
    attr = Occlusion(probe.net).attribute(
        x, sliding_window_shapes=(x.shape[1], window, window), strides=(x.shape[1], stride, stride),
        baselines=0.0, target=targets, perturbations_per_eval=_chunk(internal_batch, x.shape[0]))
    return attr.detach().sum(1)


def guided_backprop(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015), |.| max over channels.

    captum overrides the gradient of nn.ReLU modules only; EfficientNet-Lite and MobileNets use ReLU6, which
    captum would leave untouched (the result would be the plain gradient). So ReLU6 modules are swapped for a
    guided ReLU6 for the duration of the call.
    """
    from captum.attr import GuidedBackprop

    _no_layer("guided-backprop", layer)
    with guided_relu6(probe.net), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")  # expected, not news
        attr = GuidedBackprop(probe.net).attribute(_input(x), target=targets)
    return _abs_max(attr)


# ------------------------------------------------------------------------------------------ guided ReLU6
class _GuidedReLU6Function(torch.autograd.Function):
    """clamp(x, 0, 6) forward; backward passes only positive gradients where 0 < x < 6 (the guided rule)."""

    @staticmethod
    def forward(ctx, inp: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inp)
        return inp.clamp(0.0, 6.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (inp,) = ctx.saved_tensors
        return grad.clamp(min=0) * ((inp > 0) & (inp < 6)).to(grad.dtype)


class GuidedReLU6(nn.Module):
    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return _GuidedReLU6Function.apply(inp)


@contextlib.contextmanager
def guided_relu6(model: nn.Module):
    """Swap every nn.ReLU6 submodule of `model` for GuidedReLU6 while the context is open (restored after)."""
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, GuidedReLU6())
                swapped.append((parent, name, child))
    try:
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
