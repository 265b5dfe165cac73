"""Noisy linear imputation (ROAD, Rong et al. 2022), batched on the device.

Each removed pixel takes the weighted mean of its 8 neighbours (weight 1/6 for the 4 direct ones, 1/12 for the
diagonals; neighbours outside the image drop out), removed neighbours included: the values solve one sparse
linear system per image, L_UU v = W_UK x_K with L the weighted 8-neighbour graph Laplacian (what Quantus's
`noisy_linear_imputation` builds and hands to scipy's `spsolve`, one image at a time, 0.03-3 s each at 224 px).
On the CPU each image is solved directly (one sparse LU per image, every channel at once: exact, and faster than
iterating there); on a GPU conjugate gradients solve every image and channel of a chunk at once with 3x3
convolutions (L_UU is symmetric positive definite whenever some pixel is kept), started from a coarse-to-fine fill.
Gaussian noise (sigma `noise`) is then added to the imputed pixels, as ROAD does, to hide the mask's shape.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

TOLERANCE = 1e-10  # relative residual at which conjugate gradients stop (float64; values then agree to ~1e-6)
MAX_ITERATIONS = 5000
OFFSETS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6), (0, 1, 1 / 6), (1, -1, 1 / 12),
           (1, 0, 1 / 6), (1, 1, 1 / 12))  # (dy, dx, weight) of the 8 neighbours


def _kernel(dtype, device) -> torch.Tensor:
    k = torch.zeros(3, 3, dtype=dtype, device=device)
    for dy, dx, weight in OFFSETS:
        k[dy + 1, dx + 1] = weight
    return k.view(1, 1, 3, 3)


def _neighbours(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Weighted sum of each pixel's in-image neighbours, (B,1,H,W)."""
    return F.conv2d(F.pad(u, (1, 1, 1, 1)), kernel)


def _coarse_fill(x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """A smooth first guess for the holes: known pixels averaged over ever coarser grids, filled back down."""
    if min(x.shape[-2:]) <= 2 or bool(known.flatten(1).all(1).all()):
        return x * known
    small_x = F.avg_pool2d(x * known, 2, ceil_mode=True)
    small_k = F.avg_pool2d(known, 2, ceil_mode=True)
    filled = _coarse_fill(torch.where(small_k > 0, small_x / small_k.clamp_min(1e-12), small_x),
                          (small_k > 0).to(x.dtype))
    up = F.interpolate(filled, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return torch.where(known > 0, x, up)


def linear_imputation(x: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) images with the pixels where `removed` (B,H,W) is True replaced by the linear imputation:
    a sparse direct solve per image on the CPU (exact, as Quantus), batched conjugate gradients elsewhere."""
    if x.device.type == "cpu":
        return torch.stack([_solve_direct(image, mask) for image, mask in zip(x, removed)])
    return _solve_cg(x, removed)


def _system(removed: np.ndarray):
    """Sparse L_UU and the map from the kept pixels to the right-hand side, for one (H,W) mask."""
    from scipy import sparse

    h, w = removed.shape
    holes = np.flatnonzero(removed)
    variable = np.full(h * w, -1)
    variable[holes] = np.arange(len(holes))
    rows, cols = np.divmod(holes, w)
    degree = np.zeros(len(holes))
    a_rows, a_cols, a_vals, k_rows, k_cols, k_vals = [], [], [], [], [], []
    for dy, dx, weight in OFFSETS:
        ny, nx = rows + dy, cols + dx
        valid = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        degree += weight * valid
        own = np.flatnonzero(valid)
        neighbour = ny[own] * w + nx[own]
        inside = variable[neighbour] >= 0
        a_rows.append(own[inside]), a_cols.append(variable[neighbour[inside]])
        a_vals.append(np.full(int(inside.sum()), -weight))
        k_rows.append(own[~inside]), k_cols.append(neighbour[~inside]), k_vals.append(np.full(int((~inside).sum()),
                                                                                               weight))
    n = len(holes)
    lap = sparse.csc_matrix((np.concatenate([degree, *a_vals]),
                             (np.concatenate([np.arange(n), *a_rows]), np.concatenate([np.arange(n), *a_cols]))),
                            shape=(n, n))
    kept = sparse.csr_matrix((np.concatenate(k_vals), (np.concatenate(k_rows), np.concatenate(k_cols))),
                             shape=(n, h * w))
    return holes, lap, kept


def _solve_direct(image: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """One image (C,H,W): factorize L_UU once, solve for every channel."""
    from scipy.sparse.linalg import splu

    mask = removed.cpu().numpy().astype(bool)
    if not mask.any() or mask.all():
        return image.clone()
    holes, lap, kept = _system(mask)
    channels = image.detach().double().cpu().numpy().reshape(image.shape[0], -1)
    rhs = kept @ channels.T  # (holes, C): kept neighbours' weighted values
    values = splu(lap).solve(np.ascontiguousarray(rhs))
    out = channels.copy()
    out[:, holes] = values.T
    return torch.from_numpy(out).view_as(image).to(image.dtype)


def _solve_cg(x: torch.Tensor, removed: torch.Tensor, tolerance: float = TOLERANCE,
              max_iterations: int = MAX_ITERATIONS) -> torch.Tensor:
    """Every image and channel of a batch at once: conjugate gradients with 3x3 convolutions as L_UU."""
    b, c, h, w = x.shape
    dtype = torch.float64
    u0 = x.to(dtype).reshape(b * c, 1, h, w)
    unknown = removed.to(dtype).repeat_interleave(c, 0).view(b * c, 1, h, w)
    known = 1 - unknown
    kernel = _kernel(dtype, x.device)
    degree = _neighbours(torch.ones(1, 1, h, w, dtype=dtype, device=x.device), kernel)  # S_i: valid neighbours

    def apply(v: torch.Tensor) -> torch.Tensor:  # L_UU v, v zero outside the holes
        return unknown * (degree * v - _neighbours(v, kernel))

    rhs = unknown * _neighbours(u0 * known, kernel)
    v = unknown * _coarse_fill(u0, known)
    r = rhs - apply(v)
    p = r.clone()
    rr = (r * r).flatten(1).sum(1)
    limit = (tolerance ** 2) * (rhs * rhs).flatten(1).sum(1).clamp_min(1e-30)
    for _ in range(max_iterations):
        active = rr > limit
        if not bool(active.any()):
            break
        q = apply(p)
        pq = (p * q).flatten(1).sum(1)
        alpha = torch.where(active, rr / torch.where(pq > 0, pq, torch.ones_like(pq)), torch.zeros_like(rr))
        v = v + alpha.view(-1, 1, 1, 1) * p
        r = r - alpha.view(-1, 1, 1, 1) * q
        rr_new = (r * r).flatten(1).sum(1)
        beta = torch.where(active, rr_new / rr.clamp_min(1e-300), torch.zeros_like(rr))
        p = r + beta.view(-1, 1, 1, 1) * p
        rr = torch.where(active, rr_new, rr)
    out = known * u0 + unknown * v
    return out.view(b, c, h, w).to(x.dtype)


def noisy_linear_imputation(x: torch.Tensor, removed: torch.Tensor, noise: float,
                            generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """Linear imputation plus N(0, noise^2) on each imputed value; one generator per image of the batch."""
    out = linear_imputation(x, removed)
    if noise > 0:
        gens = generators if generators is not None else [None] * x.shape[0]
        draws = torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in gens])
        out = out + noise * draws * removed[:, None].to(x.dtype)
    return out
