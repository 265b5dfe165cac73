"""One forward pass that also records the outputs of named layers (what layer objectives read)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from ..models import ModelBundle


@dataclass
class Forward:
    """What objectives see: the images fed in, the logits, and the captured layer outputs."""

    images: torch.Tensor
    logits: torch.Tensor | None
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    bundle: ModelBundle | None = None

    def __getitem__(self, layer: str) -> torch.Tensor:
        return self.activations[layer]


class _StopForward(Exception):
    """Raised by a hook once every needed layer is captured, so deep layers we do not need never run."""


def forward(bundle: ModelBundle, images: torch.Tensor, layers: Iterable[str] = (), need_logits: bool = True) -> Forward:
    """Run the model once, capturing `layers` (dotted names) and, if needed, the logits."""
    layers = list(dict.fromkeys(layers))
    captured: dict[str, torch.Tensor] = {}
    handles = []

    for name in layers:
        def hook(_module, _inputs, output, name=name):
            captured[name] = output[0] if isinstance(output, (tuple, list)) else output
            if not need_logits and len(captured) == len(layers):
                raise _StopForward
        handles.append(bundle.layer(name).register_forward_hook(hook))
    logits = None
    try:
        logits = bundle.net(images)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return Forward(images=images, logits=logits, activations=captured, bundle=bundle)


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix F F^T / (C H W) per image (Gatys et al.), (N,C,C)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)
