"""Capture the attention probabilities (and their gradients) of a vision transformer during one forward pass.

Why a capture module: timm's fused attention (scaled_dot_product_attention) never materializes the attention
matrix, and Hugging Face models only return it on the eager path. This module finds the self-attention layers
of a timm ViT (anything with a `fused_attn` flag and an `attn_drop` module: ViT, DeiT, BEiT, EVA...) or of a
Hugging Face ViT/DeiT loaded via `hf:DIR`, forces the unfused/eager path for the duration of one pass, and
records per layer the (N, heads, T, T) softmax output the values are multiplied with — the same tensor, so its
gradient is the gradient of the attention actually used. Whole batches: nothing here mixes images.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DeepprobeError

SUPPORTED = ("timm ViT-style models with a class token (vit_*, deit_*, beit_*, eva_*) and Hugging Face "
             "ViT/DeiT classifiers and CLIP ViTs via hf:DIR")


@dataclass
class AttentionCapture:
    """Attention of every self-attention layer, bottom-up, for one batch.

    attentions: per layer (N, heads, T, T) float probabilities (rows sum to 1), detached
                (or what `on_attention` made of them).
    gradients:  per layer d(sum of target logits)/d(attention), same shapes (or what `on_gradient` made of
                attention and gradient); None without targets.
    prefix:     tokens before the patch tokens (CLS, distillation, registers); patch tokens are T-prefix.
    grid:       (h, w) patch grid, h * w == T - prefix.
    logits:     (N, classes) of the same forward pass, detached.
    """

    attentions: list
    gradients: list | None
    prefix: int
    grid: tuple[int, int]
    logits: torch.Tensor


def patch_tokens_to_grid(tokens: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """(..., T) per-token values -> (..., h, w) over the patch grid, prefix tokens (CLS, dist, registers) dropped."""
    patches = tokens[..., prefix:]
    if patches.shape[-1] != grid[0] * grid[1]:
        raise DeepprobeError(f"{patches.shape[-1]} patch tokens do not fill a {grid[0]}x{grid[1]} grid")
    return patches.reshape(*patches.shape[:-1], *grid)


# ----------------------------------------------------------------------------------------------- backends
def _inner(probe) -> nn.Module:
    """The user's network under our wrappers (Normalized, LogitsOf)."""
    net = probe.net
    while hasattr(net, "net") and isinstance(net.net, nn.Module) and type(net).__module__.startswith("deepprobe"):
        net = net.net
    return net


def _timm_attention_modules(model: nn.Module) -> list[nn.Module]:
    """Self-attention modules of the transformer blocks (attention-pooling heads are left out)."""
    root = model.blocks if isinstance(getattr(model, "blocks", None), nn.Module) else model
    return [m for m in root.modules()
            if hasattr(m, "fused_attn") and isinstance(getattr(m, "attn_drop", None), nn.Module)]


def _timm_grid(model: nn.Module, size: tuple[int, int]) -> tuple[int, int] | None:
    pe = getattr(model, "patch_embed", None)
    if pe is None:
        return None
    dynamic = getattr(pe, "dynamic_img_size", False) or getattr(model, "dynamic_img_size", False)  # (ViTs: the model)
    if dynamic and hasattr(pe, "dynamic_feat_size"):
        return tuple(int(v) for v in pe.dynamic_feat_size(size))
    grid = getattr(pe, "grid_size", None)
    if grid is not None:
        return tuple(int(v) for v in grid)
    p = getattr(pe, "patch_size", None)
    if p is None:
        return None
    p = (p, p) if isinstance(p, int) else tuple(p)
    return size[0] // p[0], size[1] // p[1]


def _hf_attention_modules(model: nn.Module) -> list[nn.Module]:
    """Modules whose forward returns (output, attention weights), as transformers records them."""
    kind = None
    for m in model.modules():
        rec = getattr(type(m), "_can_record_outputs", None) or {}
        kind = rec.get("attentions") if isinstance(rec, dict) else None
        if kind is not None:
            break
    if kind is not None:
        kind = getattr(kind, "target_class", kind)  # OutputRecorder(cls, ...) or the class itself
        if isinstance(kind, type):
            found = [m for m in model.modules() if isinstance(m, kind)]
            if found:
                return found
    # older transformers: ViTSelfAttention / DeiTSelfAttention return (context, probs) with output_attentions
    return [m for m in model.modules() if type(m).__name__.endswith("SelfAttention")]


def _hf_grid(model: nn.Module, size: tuple[int, int]) -> tuple[int, int] | None:
    config = getattr(model, "config", None)
    config = getattr(config, "vision_config", None) or config  # CLIP: the image tower's patches
    p = getattr(config, "patch_size", None)
    if p is None:
        return None
    p = (p, p) if isinstance(p, int) else tuple(p)
    return size[0] // p[0], size[1] // p[1]


def _is_hf(model: nn.Module) -> bool:
    return type(model).__module__.startswith("transformers.") and hasattr(model, "config")


def _not_a_vit(probe, method: str, why: str) -> DeepprobeError:
    return DeepprobeError(f"{method} needs a vision transformer; {probe.spec} {why} (supported: {SUPPORTED})")


@contextlib.contextmanager
def _unfused(modules: list[nn.Module]):
    """timm: set fused_attn=False on each attention module while the context is open (restored after)."""
    saved = [m.fused_attn for m in modules]
    try:
        for m in modules:
            m.fused_attn = False
        yield
    finally:
        for m, v in zip(modules, saved):
            m.fused_attn = v


@contextlib.contextmanager
def _eager(model: nn.Module):
    """Hugging Face: eager attention and output_attentions for the duration (sdpa/flash return no weights)."""
    config = model.config
    before, outputs = getattr(config, "_attn_implementation", "eager"), getattr(config, "output_attentions", False)
    switch = before not in (None, "eager") and hasattr(model, "set_attn_implementation")
    try:
        if switch:
            model.set_attn_implementation("eager")
        config.output_attentions = True  # older transformers return the weights only when asked
        yield
    finally:
        config.output_attentions = outputs
        if switch:
            model.set_attn_implementation(before)


def _identity(attn: torch.Tensor) -> torch.Tensor:
    return attn


def _pair(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return grad


def capture_attention(probe, x: torch.Tensor, targets: torch.Tensor | None = None, method: str = "this method",
                      on_attention: Callable[[torch.Tensor], object] = _identity,
                      on_gradient: Callable[[torch.Tensor, torch.Tensor], object] = _pair) -> AttentionCapture:
    """One forward pass (plus one backward pass of the summed target logits when `targets` is given).

    Why the sum: in eval mode each image's logit depends only on that image, so one backward pass of the
    sum gives every image's own gradient — the whole batch in one go. `on_attention(attn)` and
    `on_gradient(attn, grad)` reduce each layer as soon as it is computed (e.g. fuse the heads), so a method
    stores (N, T, T) per layer instead of (N, heads, T, T); by default the full tensors are kept.
    """
    model = _inner(probe)
    size = (int(x.shape[-2]), int(x.shape[-1]))
    hf = _is_hf(model)
    if hf:
        modules, grid = _hf_attention_modules(model), _hf_grid(model, size)
        declared = None
    else:
        modules, grid = _timm_attention_modules(model), _timm_grid(model, size)
        declared = getattr(model, "num_prefix_tokens", None)
        if declared is None:
            modules = []
    if not modules or grid is None:
        raise _not_a_vit(probe, method, "has no self-attention layers with a patch grid and class token")

    n = x.shape[0]
    kept: list[object] = []
    grads: dict[int, object] = {}
    shapes: list[tuple[int, ...]] = []

    def keep(t: torch.Tensor | None) -> None:
        if t is None:
            raise _not_a_vit(probe, method, "returned no attention weights (not on the eager path)")
        shapes.append(tuple(t.shape))
        if t.dim() != 4 or t.shape[0] != n or t.shape[-1] != t.shape[-2]:
            return  # reported below, outside the forward pass
        layer = len(kept)
        if targets is not None and t.requires_grad:
            t.register_hook(lambda g, a=t, i=layer: grads.__setitem__(i, on_gradient(a.detach().float(), g.float())))
        kept.append(on_attention(t.detach().float()))

    if hf:
        hooks = [m.register_forward_hook(lambda _m, _i, out: keep(out[1] if isinstance(out, tuple) else None))
                 for m in modules]
        switch = _eager(model)
    else:
        hooks = [m.attn_drop.register_forward_hook(lambda _m, _i, out: keep(out)) for m in modules]
        switch = _unfused(modules)
    x = x.to(probe.device)
    try:
        with switch, torch.set_grad_enabled(targets is not None):
            inp = x.detach().requires_grad_(targets is not None)
            logits = probe.net(inp)
            if targets is not None and len(kept) == len(shapes):
                logits.float().gather(1, targets.to(logits.device).view(-1, 1)).sum().backward()
    finally:
        for h in hooks:
            h.remove()

    for shape in shapes:
        if len(shape) != 4 or shape[0] != n or shape[-1] != shape[-2]:
            raise _not_a_vit(probe, method, f"has attention of shape {shape}, not (N, heads, T, T) "
                             "over the whole image (windowed attention cannot be rolled out)")
    tokens = shapes[0][-1]
    if any(shape[-1] != tokens for shape in shapes):
        raise _not_a_vit(probe, method, "changes its token count between layers")
    prefix = tokens - grid[0] * grid[1]
    if prefix < 0 or (declared is not None and prefix != declared):
        raise _not_a_vit(probe, method, f"has {tokens} tokens, which does not match a {grid[0]}x{grid[1]} "
                         f"patch grid plus {declared if declared is not None else 'its'} prefix tokens")
    gradients = None
    if targets is not None:
        if len(grads) != len(kept):  # a layer the target logit does not depend on gets a zero gradient
            for i in range(len(kept)):
                if i not in grads:
                    zero = torch.zeros(shapes[i], device=x.device)
                    grads[i] = on_gradient(zero, zero)
        gradients = [grads[i] for i in range(len(kept))]
    return AttentionCapture(attentions=kept, gradients=gradients, prefix=prefix, grid=grid,
                            logits=logits.detach().float())
