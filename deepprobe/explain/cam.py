"""Class activation maps: Grad-CAM (Selvaraju et al. 2017), Grad-CAM++ (Chattopadhay et al. 2018), HiResCAM,
XGrad-CAM (Fu et al. 2020), Layer-CAM (Jiang et al. 2021) and Eigen-CAM (Muhammad & Yeasin 2020).

Shaped like pytorch-grad-cam's BaseCAM: `class_activation_map` owns the hooks, the one forward and backward
pass for the whole batch, the token-to-grid reshape for vision transformers and the ReLU; a method only says
how channel weights are computed from the layer's activations A and the gradients dY/dA of the target *logit*
(or, for the element-wise ones, how A and dY/dA combine per position). The CAMs that need more forward passes
(Score-CAM, Ablation-CAM) are in explain/cam_passes.py, FullGrad in explain/fullgrad.py, on the same hooks.
Resizing and scaling are the dispatcher's job (`deepprobe.explain.explain`). Everything stays on the device.

Why it is cheap: the forward pass runs without autograd up to the explained layer; the hook turns the layer's
output into a fresh leaf that requires grad, so autograd records (and the backward pass walks) only the part
of the network above the layer, and no parameter gradients are ever computed.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import DeepprobeError

EPS = 1e-7  # Grad-CAM++ denominator guard (as pytorch-grad-cam)

WeightFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (A, dY/dA) as (N,C,h,w) -> (N,C) weights


# ------------------------------------------------------------------------------------------ channel weights
def gradcam_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: the spatial mean of the gradients, one weight per channel."""
    return grads.mean(dim=(2, 3))


def gradcam_pp_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ with the closed-form alpha of an exponential score (as pytorch-grad-cam):
    alpha = g^2 / (2 g^2 + sum(A) g^3), zero where g = 0; weights = sum(alpha * relu(g))."""
    g2 = grads.pow(2)
    alpha = g2 / (2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g2 * grads + EPS)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return (alpha * grads.clamp(min=0)).sum(dim=(2, 3))


def xgradcam_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM: sum over positions of dY/dA * A / sum(A), one weight per channel (as pytorch-grad-cam)."""
    return (grads * acts / (acts.sum(dim=(2, 3), keepdim=True) + EPS)).sum(dim=(2, 3))


# ------------------------------------------------------------------------------------------ layers
def default_cam_layer(probe, x: torch.Tensor) -> str:
    """Dotted name of the layer a CAM explains when none is given.

    CNNs: the last module whose output is a spatial (N,C,h,w) map with h, w > 1 (found with one forward pass).
    Vision transformers have no such map: the input norm of the last block (`blocks.-1.norm1` in timm,
    `layernorm_before` of the last layer in Hugging Face, `layer_norm1` of CLIP's image tower), whose patch
    tokens still carry the class gradient —
    the final norm's patch tokens do not, when the head reads only the class token.
    """
    from ..models.layers import last_spatial_layer

    # transformers first: their attention internals (q/k norms, (N, heads, T, d)) look like 4-D maps
    inner = probe.inner
    blocks = getattr(inner, "blocks", None)
    if (getattr(inner, "patch_embed", None) is not None and isinstance(blocks, nn.Sequential) and len(blocks)
            and hasattr(blocks[-1], "norm1")):
        return f"blocks.{len(blocks) - 1}.norm1"
    hf = [n for n, _ in inner.named_modules() if n.endswith("layernorm_before")
          or (n.startswith("vision_model.encoder.") and n.endswith("layer_norm1"))]  # CLIP's image tower
    if hf:
        return hf[-1]
    return last_spatial_layer(probe.net, x[:1].to(probe.device), inner)


def _token_grid(probe, x: torch.Tensor, tokens: int) -> tuple[int, int]:
    """(prefix, (h, w)) for a (N,T,C) token output: the patch grid of a timm/HF ViT, else the largest square."""
    from .attention_capture import _hf_grid, _is_hf, _timm_grid

    size = (int(x.shape[-2]), int(x.shape[-1]))
    inner = probe.inner
    grid = _hf_grid(inner, size) if _is_hf(inner) else _timm_grid(inner, size)
    if grid is None:  # a token model we do not know: assume a square grid behind a few prefix tokens
        side = int(tokens ** 0.5)
        grid = (side, side)
    prefix = tokens - grid[0] * grid[1]
    declared = getattr(inner, "num_prefix_tokens", None)
    if prefix < 0 or (declared is not None and prefix != declared):
        raise DeepprobeError(f"the layer has {tokens} tokens, which is not a {grid[0]}x{grid[1]} patch grid plus "
                             f"{declared if declared is not None else 'a few'} prefix tokens; pick another --layer")
    return prefix, grid


def _as_map(probe, x: torch.Tensor, t: torch.Tensor, layer: str) -> torch.Tensor:
    """A layer output as (N,C,h,w): spatial maps as they are, ViT tokens (N,T,C) reshaped to the patch grid."""
    if t.dim() == 4:
        return t
    if t.dim() == 3:
        from .attention_capture import patch_tokens_to_grid

        prefix, grid = _token_grid(probe, x, t.shape[1])
        return patch_tokens_to_grid(t.transpose(1, 2), prefix, grid)  # (N,C,T) -> (N,C,h,w), prefix dropped
    raise DeepprobeError(f"layer {layer!r} outputs shape {tuple(t.shape)}, not a (N,C,H,W) map or (N,T,C) tokens; "
                         "pick another --layer (see `deepprobe layers`)")


# ------------------------------------------------------------------------------------------ the shared pass
def layer_output(probe, x: torch.Tensor, layer: str) -> torch.Tensor:
    """Activations of `layer` as (N,C,h,w) float32, from one forward pass without autograd (the last call when
    the layer runs more than once)."""
    seen: list[torch.Tensor] = []

    def hook(_m, _inputs, output):
        first = output[0] if isinstance(output, (tuple, list)) else output
        if isinstance(first, torch.Tensor):
            seen.append(first.detach().clone())  # a later in-place op must not change what was seen

    handle = probe.layer(layer).register_forward_hook(hook)
    try:
        with torch.no_grad():
            probe.net(x)
    finally:
        handle.remove()
    if not seen:
        raise DeepprobeError(f"layer {layer!r} never ran (or gave no tensor) in the forward pass; pick another --layer")
    return _as_map(probe, x, seen[-1].float(), layer)


def layer_and_gradient(probe, x: torch.Tensor, targets: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations A of `layer` and d(sum of each image's target logit)/dA, both (N,C,h,w) float32.

    Why the sum: in eval mode each image's logit depends only on that image, so one backward pass of the sum
    gives every image its own gradient. If the layer runs more than once, the last call is explained.
    """
    module = probe.layer(layer)
    seen: list[torch.Tensor] = []

    def hook(_m, _inputs, output):
        first = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(first, torch.Tensor):
            return None
        torch.set_grad_enabled(True)  # autograd starts here: nothing below the layer is recorded
        leaf = first.detach().requires_grad_(True)
        seen.append(leaf)
        out = leaf.clone()  # a later in-place op (ReLU(inplace=True)) must not touch the leaf
        if isinstance(output, tuple):
            return (out, *output[1:])
        if isinstance(output, list):
            return [out, *output[1:]]
        return out

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = probe.net(x)
            torch.set_grad_enabled(True)
            if not seen:
                raise DeepprobeError(f"layer {layer!r} never ran (or gave no tensor) in the forward pass; "
                                     "pick another --layer")
            score = logits.float().gather(1, targets.to(logits.device).view(-1, 1)).sum()
            if not score.requires_grad:
                raise DeepprobeError(f"the logits do not depend on layer {layer!r}; pick another --layer")
            (grad,) = torch.autograd.grad(score, seen[-1], allow_unused=True)
    finally:
        handle.remove()
    acts = seen[-1].detach()
    grad = torch.zeros_like(acts) if grad is None else grad
    return _as_map(probe, x, acts.float(), layer), _as_map(probe, x, grad.float(), layer)


def class_activation_map(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None,
                         weights: WeightFn) -> torch.Tensor:
    """ReLU(sum_k w_k A_k) at the layer's resolution, (N,h,w); `weights` turns (A, dY/dA) into (N,C)."""
    if targets is None:
        raise DeepprobeError("a class activation map needs a target class")
    layer = layer or default_cam_layer(probe, x)
    acts, grads = layer_and_gradient(probe, x, targets, layer)
    w = weights(acts, grads)
    return torch.einsum("nc,nchw->nhw", w, acts).clamp(min=0)


# ------------------------------------------------------------------------------------------ methods
def gradcam(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """Grad-CAM maps (N,h,w) at the layer's resolution."""
    return class_activation_map(probe, x, targets, layer, gradcam_weights)


def gradcam_pp(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """Grad-CAM++ maps (N,h,w) at the layer's resolution."""
    return class_activation_map(probe, x, targets, layer, gradcam_pp_weights)


def xgradcam(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """XGrad-CAM maps (N,h,w) at the layer's resolution."""
    return class_activation_map(probe, x, targets, layer, xgradcam_weights)


def hirescam(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): ReLU(sum_k dY/dA_k * A_k) at each position, (N,h,w).

    Why beside Grad-CAM: Grad-CAM averages each channel's gradient over the whole map before weighting the
    activations, so a score that depends on one region (a detector's box) lights up wherever those channels
    fire. The element-wise product keeps the gradient where it is (ODAM, Zhao et al. 2023, does the same for
    detectors); on a classifier whose logit pools the map uniformly the two agree up to scale.
    """
    if targets is None:
        raise DeepprobeError("a class activation map needs a target class")
    acts, grads = layer_and_gradient(probe, x, targets, layer or default_cam_layer(probe, x))
    return (grads * acts).sum(dim=1).clamp(min=0)


def layercam(probe, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """Layer-CAM (Jiang et al. 2021): ReLU(sum_k ReLU(dY/dA_k) * A_k) at each position, (N,h,w).

    HiResCAM's element-wise product with only the positive gradients kept: a position counts where raising the
    activation raises the class score, which keeps fine detail in early layers where averaged weights blur.
    """
    if targets is None:
        raise DeepprobeError("a class activation map needs a target class")
    acts, grads = layer_and_gradient(probe, x, targets, layer or default_cam_layer(probe, x))
    return (grads.clamp(min=0) * acts).sum(dim=1).clamp(min=0)


def principal_projection(acts: torch.Tensor) -> torch.Tensor:
    """(N,C,h,w) -> (N,h,w): each position's activations, centred over positions, projected on the first
    principal component (pytorch-grad-cam's get_2d_projection, batched in torch on the device).

    The sign of a principal component is arbitrary (an SVD may return v or -v); it is fixed here so that the
    projection correlates positively with the total activation at each position, i.e. the map points where the
    layer is most active. A layer whose activations are the same at every position has no principal direction:
    its centred activations are zero and so is the map.
    """
    n, c, h, w = acts.shape
    flat = acts.flatten(2).transpose(1, 2).double()  # (N, hw, C)
    centred = flat - flat.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = centred @ vh[:, 0, :, None]  # (N, hw, 1)
    total = flat.sum(-1, keepdim=True)
    sign = torch.sign(((projection - projection.mean(1, keepdim=True)) * (total - total.mean(1, keepdim=True))).sum(1))
    projection = projection * torch.where(sign == 0, torch.ones_like(sign), sign)[:, None]
    return projection[..., 0].view(n, h, w).float()


def eigencam(probe, x: torch.Tensor, targets: torch.Tensor | None = None, layer: str | None = None) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin 2020): ReLU of the first principal component of the layer's activations,
    (N,h,w); one forward pass, no gradient, the same map for every class (targets are not used)."""
    acts = layer_output(probe, x, layer or default_cam_layer(probe, x))
    return principal_projection(acts).clamp(min=0)
