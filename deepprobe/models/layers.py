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


def stage_outputs(net: nn.Module, example: torch.Tensor, inner: nn.Module | None = None) -> list[tuple[str, int, int]]:
    """(name, stride, map side) of each stage's output, shallow to deep. The network is read as a chain of blocks
    (containers such as nn.Sequential opened up, other modules taken whole); for every stride (input side / map
    side) the last block that keeps it ends the stage, named by its highest ancestor with the same output."""
    inner = inner if inner is not None else net
    shapes = {n: s for n, _, s in layer_shapes(net, example, inner)}
    side = int(example.shape[-2])
    spatial = {n: s for n, s in shapes.items() if len(s) == 4 and s[2] > 1 and s[3] > 1}
    last: dict[int, str] = {}
    for name in _blocks(inner):
        if name in spatial:
            last[max(1, round(side / spatial[name][2]))] = name
    stages = []
    for stride, name in sorted(last.items()):
        parts = name.split(".")
        ancestors = [".".join(parts[:k]) for k in range(1, len(parts))]
        name = next((a for a in ancestors if a in spatial and spatial[a] == spatial[name]), name)
        stages.append((name, stride, int(spatial[name][2])))
    return stages


def _blocks(module: nn.Module, prefix: str = "") -> list[str]:
    """Dotted names of the chain of blocks: containers (Sequential, ModuleList) opened up, in declared order."""
    names = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        names += _blocks(child, full + ".") if isinstance(child, (nn.Sequential, nn.ModuleList)) else [full]
    return names


def default_layers(bundle, asked: list[str], defaults: tuple[str, ...], deepest_only: bool = True) -> list[str]:
    """The layers a technique works on: `asked`, unless it is the EfficientNet-Lite default and this model lacks
    those names; then stage outputs with stride at most 16 and maps of at least 4 px (the deepest one, or all of
    them shallow to deep when `deepest_only` is False), which is what the defaults are on EfficientNet-Lite."""
    modules = dict(bundle.inner.named_modules())
    if list(asked) != list(defaults) or all(name in modules for name in defaults):
        return list(asked)
    size = bundle.input_size or (224, 224)
    stages = stage_outputs(bundle.net, torch.zeros(1, 3, *size, device=bundle.device), bundle.inner)
    fitting = [name for name, stride, side in stages if stride <= 16 and side >= 4] or [n for n, _, _ in stages[:1]]
    if not fitting:
        raise DeepprobeError(f"{bundle.spec} has no layer with a spatial (N,C,H,W) output; pass --layer")
    return fitting[-1:] if deepest_only else fitting
