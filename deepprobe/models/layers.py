"""Dotted layer names and their output shapes, so users can pick `--layer` without reading source code."""
from __future__ import annotations

import difflib

import torch
from torch import nn

from ..errors import DeepprobeError


def find_layer(net: nn.Module, name: str) -> nn.Module:
    modules = dict(net.named_modules())
    if name in modules and name != "":
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.5)
    hint = f": did you mean {' or '.join(repr(c) for c in close)}?" if close else " (see `deepprobe layers`)"
    raise DeepprobeError(f"unknown layer {name!r}{hint}")


@torch.no_grad()
def layer_shapes(net: nn.Module, example: torch.Tensor, inner: nn.Module | None = None,
                 max_depth: int | None = None) -> list[tuple[str, str, tuple[int, ...]]]:
    """Run one forward pass and record (name, type, output shape) for every named submodule of `inner`."""
    inner = inner if inner is not None else net
    rows: dict[str, tuple[str, tuple[int, ...]]] = {}
    handles = []
    for name, module in inner.named_modules():
        if not name or (max_depth is not None and name.count(".") >= max_depth):
            continue

        def hook(_m, _inp, out, name=name, kind=type(module).__name__):
            tensor = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(tensor, torch.Tensor):
                rows[name] = (kind, tuple(tensor.shape))
        handles.append(module.register_forward_hook(hook))
    try:
        net(example)
    finally:
        for handle in handles:
            handle.remove()
    order = [n for n, _ in inner.named_modules() if n in rows]
    return [(n, rows[n][0], rows[n][1]) for n in order]


def last_spatial_layer(net: nn.Module, example: torch.Tensor, inner: nn.Module | None = None) -> str:
    """The deepest layer whose output is still a (N,C,H,W) map with H,W > 1 (the Grad-CAM default)."""
    shapes = layer_shapes(net, example, inner)
    spatial = [n for n, _, s in shapes if len(s) == 4 and s[2] > 1 and s[3] > 1]
    if not spatial:
        raise DeepprobeError("the model has no layer with a spatial (N,C,H,W) output; pass --layer")
    # Prefer a top-level block over its last leaf so hooks see the block output.
    last = spatial[-1]
    parents = [n for n in spatial if last.startswith(n + ".")]
    return parents[0] if parents else last
