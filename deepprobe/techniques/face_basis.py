"""Low-dimensional bases for editing the aligned 64x64 face chip (see techniques/age.py).

`smooth_basis` is dataset-free: low-frequency DCT components, luminance with more freedom than colour.
`pca_basis` takes the principal components of a set of aligned face chips; `cached_pca_basis` builds one from a
folder of photos and caches it.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import DeepprobeError
from ..io import find_images, read_image
from ..models.age import CHIP_PADDING, CHIP_SIZE
from .face import DEFAULT_MIN_SCORE, find_faces

_LUMA = (1.0, 1.0, 1.0)
_CHROMA = ((1.0, 0.0, -1.0), (1.0, -2.0, 1.0))


def _dct_images(size: int, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D DCT-II components with frequency radius < `radius`, unit RMS, and their frequencies."""
    n = torch.arange(size, dtype=torch.float32)
    freqs = [(u, v) for u in range(radius) for v in range(radius) if u * u + v * v < radius * radius]
    u = torch.tensor([f[0] for f in freqs], dtype=torch.float32)
    v = torch.tensor([f[1] for f in freqs], dtype=torch.float32)
    rows = torch.cos(math.pi * (2 * n[None, :] + 1) * u[:, None] / (2 * size))  # (K,size)
    cols = torch.cos(math.pi * (2 * n[None, :] + 1) * v[:, None] / (2 * size))
    images = rows[:, :, None] * cols[:, None, :]
    images = images / images.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
    return images, torch.sqrt(u * u + v * v)


def smooth_basis(size: int = CHIP_SIZE, frequencies: int = 32, chroma_frequencies: int = 2,
                 chroma_scale: float = 0.15, decay: float = 1.5) -> torch.Tensor:
    """The dataset-free basis (K,3,size,size): low-frequency DCT components in luminance and colour.

    Each component is scaled by 1/(1+f)^decay so optimizer steps favour broad, smooth changes; colour
    components get few frequencies and a smaller scale, because colour blotches look fake long before
    shading changes do.
    """
    parts = []
    for colours, radius, scale in (((_LUMA,), frequencies, 1.0), (_CHROMA, chroma_frequencies, chroma_scale)):
        if radius <= 0:
            continue
        images, freq = _dct_images(size, radius)
        weight = scale / (1 + freq) ** decay
        for colour in colours:
            c = torch.tensor(colour)
            c = c / c.norm()
            parts.append(images[:, None] * c[None, :, None, None] * weight[:, None, None, None])
    if not parts:
        raise DeepprobeError("the smooth basis needs frequencies >= 1")
    return torch.cat(parts)


def pca_basis(chips: torch.Tensor, components: int = 32) -> torch.Tensor:
    """Principal components (K,3,H,W) of aligned face chips (M,3,H,W), each scaled to one standard deviation."""
    if chips.shape[0] < 2:
        raise DeepprobeError(f"a PCA face basis needs at least 2 faces, found {chips.shape[0]}")
    flat = chips.flatten(1).double()
    centred = flat - flat.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    k = max(1, min(components, chips.shape[0] - 1))
    std = s[:k] / math.sqrt(chips.shape[0] - 1)
    return (vh[:k] * std[:, None]).float().reshape(k, *chips.shape[1:])


def folder_chips(folder: str | Path, min_score: float = DEFAULT_MIN_SCORE) -> torch.Tensor:
    """Aligned chips (M,3,64,64) of every face in every image of a folder (for a PCA face basis)."""
    paths, problems = find_images([str(folder)])
    if problems:
        raise DeepprobeError(f"--faces {folder}: {problems[0][1]}")
    chips = [f.chip for path in paths for f in find_faces(read_image(path), min_score)]
    if len(chips) < 2:
        raise DeepprobeError(f"--faces {folder}: found {len(chips)} face(s) in {len(paths)} image(s); a PCA basis needs at least 2")
    return torch.cat(chips)


def cached_pca_basis(folder: str | Path, components: int, cache_dir: str | Path,
                     min_score: float = DEFAULT_MIN_SCORE) -> tuple[torch.Tensor, int, Path]:
    """The PCA basis of a face folder, cached in `cache_dir` under a hash of the folder's files.

    Returns (basis (K,3,64,64), number of faces, cache file). Aligning many photos takes a while, so a
    second run on the same folder reads the .npz instead (loaded without pickle).
    """
    paths, _ = find_images([str(folder)])
    digest = hashlib.sha256(f"pca-v1|{components}|{min_score}|{CHIP_SIZE}|{CHIP_PADDING}".encode())
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    cache = Path(cache_dir) / f"age-pca-{digest.hexdigest()[:16]}.npz"
    if cache.is_file():
        data = np.load(cache, allow_pickle=False)
        return torch.from_numpy(data["basis"]), int(data["faces"]), cache
    chips = folder_chips(folder, min_score)
    basis = pca_basis(chips, components)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, basis=basis.numpy(), faces=np.array(chips.shape[0]))
    return basis, chips.shape[0], cache
