"""Layer-wise relevance propagation (Bach et al. 2015) on CNNs, with Zennit's composites and canonizers.

One forward and one backward pass: Zennit's rules replace each layer's gradient by its relevance rule, and the
relevance at the network's input is what the backward pass returns. The composites are Zennit's, by Zennit's
names and defaults (`--composite`):
- epsilon-plus-flat:    Flat on the first layer, ZPlus on convolutions, Epsilon on dense layers (Zennit's advice
                        for CNNs, Kohlbrenner et al. 2020);
- epsilon-gamma-box:    ZBox on the first layer (bounded by the pixel range [0, 1] after the model's own
                        normalization), Gamma (0.25) on convolutions, Epsilon on dense layers;
- epsilon-alpha2-beta1: Alpha2-Beta1 on every convolution, Epsilon on dense layers.
BatchNorms are merged and residual sums go through Zennit's Sum module first (explain/lrp_canonizers.py).

Where relevance is read: at the input of the user's network, i.e. after deepprobe's normalization wrapper, whose
`(x - mean) / std` is not a layer LRP has a rule for. The output relevance is the explained logit itself, so the
relevance of an image sums to that logit up to what biases absorb (Zennit keeps biases in the denominators by
default; with `zero_params="bias"` the sum is the logit to within the stabilizers, about 1e-5 relative).
The map is the relevance summed over colour channels, signed (negative = evidence against the class).
"""
from __future__ import annotations

import torch

from ..errors import DeepprobeError
from ..options.explain import COMPOSITES, Options
from .lrp_canonizers import canonizers, is_transformer, uncovered

_D = Options()
CLIP_TOP = 0.01  # share of the largest |relevance| values capped (LRP maps are spiky, like gradient maps)
_ZENNIT_CLASSES = {"epsilon-plus-flat": "EpsilonPlusFlat", "epsilon-gamma-box": "EpsilonGammaBox",
                   "epsilon-alpha2-beta1": "EpsilonAlpha2Beta1"}


def check_model(probe) -> None:
    """One line when the model is not a CNN whose every layer a Zennit rule or canonizer covers."""
    inner = probe.inner
    if isinstance(inner, torch.jit.ScriptModule):
        raise DeepprobeError(f"lrp needs an eager PyTorch model (Zennit's hooks); {probe.spec} is TorchScript")
    if is_transformer(inner):
        raise DeepprobeError(f"lrp's composites cover CNNs; {probe.spec} has attention layers: use --method attnlrp")
    bad = uncovered(inner)
    if bad and bad[0][0] == "the model":
        raise DeepprobeError(f"lrp does not cover {bad[0][1]} ({probe.spec}): its forward is not one deepprobe can read "
                             "layer by layer (covered: nn.Sequential networks and timm/torchvision CNN families, "
                             "see the README); use gradcam or the captum methods on this model")
    if bad:
        kinds = list(dict.fromkeys(kind for _, kind in bad))
        where = ", ".join(name for name, _ in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise DeepprobeError(f"lrp does not cover {', '.join(kinds)} ({where}) in {probe.spec}: no Zennit rule or "
                             "canonizer splits relevance through it; use gradcam or the captum methods on this model")


def input_bounds(probe, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The network-input values of an all-black and an all-white image (ZBox's bounds), shaped like `x`."""
    seen: list[torch.Tensor] = []

    class _Stop(Exception):
        pass

    def grab(_m, args):
        seen.append(args[0].detach())
        raise _Stop

    handle = probe.inner.register_forward_pre_hook(grab)
    try:
        for value in (0.0, 1.0):
            try:
                with torch.no_grad():
                    probe.net(torch.full_like(x[:1], value))
            except _Stop:
                pass
    finally:
        handle.remove()
    low, high = (t.expand(x.shape[0], *t.shape[1:]) for t in seen)
    return torch.minimum(low, high), torch.maximum(low, high)


def composite_for(probe, x: torch.Tensor, composite: str, zero_params=None):
    """Zennit's composite of that name with this network's canonizers."""
    from zennit import composites as zc

    if composite not in _ZENNIT_CLASSES:
        raise DeepprobeError(f"unknown LRP composite {composite!r}; choose one of {', '.join(COMPOSITES)}")
    kwargs = {"canonizers": canonizers(probe, x), "zero_params": zero_params}
    if composite == "epsilon-gamma-box":
        kwargs["low"], kwargs["high"] = input_bounds(probe, x)
    return getattr(zc, _ZENNIT_CLASSES[composite])(**kwargs)


def lrp_relevance(probe, x: torch.Tensor, targets: torch.Tensor, composite: str = _D.composite,
                  zero_params=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(relevance at the network's input (N,C,H,W), the explained logits (N,)), one forward + backward pass.

    In eval mode each image's logit depends only on that image, so one backward pass seeded with every image's
    own logit gives each image its relevance.
    """
    check_model(probe)
    x = x.to(probe.device)
    comp = composite_for(probe, x, composite, zero_params)
    leaves: list[torch.Tensor] = []

    def as_leaf(_m, args):
        leaves.append(args[0].detach().requires_grad_(True))
        return (leaves[-1], *args[1:])

    handle = probe.inner.register_forward_pre_hook(as_leaf)
    try:
        with comp.context(probe.net) as model, torch.enable_grad():
            logits = model(x)
            score = logits.float().gather(1, targets.to(logits.device).view(-1, 1))
            (relevance,) = torch.autograd.grad(score, leaves[-1], grad_outputs=score.detach())
    finally:
        handle.remove()
    return relevance.detach(), score.detach()[:, 0]


def lrp(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None,
        composite: str = _D.composite) -> torch.Tensor:
    """LRP maps (N,H,W): relevance summed over colour channels, signed, capped at the top 1% of |relevance|."""
    if layer not in (None, ""):
        raise DeepprobeError("lrp propagates relevance down to the input pixels; --layer does not apply to it")
    relevance, _ = lrp_relevance(probe, x, targets, composite)
    return cap_both_ends(relevance.sum(1))


def cap_both_ends(maps: torch.Tensor, top: float = CLIP_TOP) -> torch.Tensor:
    """Clamp each (h,w) map to +-its (1 - top) quantile of |value|, in units of that quantile (so [-1, 1]): a few
    spikes would otherwise take the whole [0,1] range after min-max scaling (as captum's visualizer caps
    outliers), and relevance can be tiny (biases absorb most of it) next to the scaler's epsilon."""
    flat = maps.flatten(1).float()
    cap = torch.quantile(flat.abs(), 1.0 - top, dim=1, keepdim=True)
    cap = torch.where(cap > 0, cap, flat.abs().amax(1, keepdim=True)).clamp(min=torch.finfo(flat.dtype).tiny)
    return (flat / cap).clamp(-1.0, 1.0).view_as(maps)
