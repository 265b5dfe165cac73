"""Per-image random numbers from a counter-based hash, so an image's attack never depends on its batch.

Every draw is a pure function of (the image's key, a label, an element index), computed with integer
arithmetic on the model's device: the same image gets the same random start and the same Square proposals
alone or in any batch, on any rank of a sharded run, on the CPU or a GPU. Keys are 32-bit values held in
int64 tensors; the mixer is a 32-bit integer hash (xorshift-multiply, two rounds), whose products stay
below 2**59, so nothing overflows.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch

_MASK = 0xFFFFFFFF
_MUL = 0x45D9F3B


def _mix(x):
    """32-bit avalanche hash; works on Python ints and int64 tensors alike (same results)."""
    x = (((x >> 16) ^ x) * _MUL) & _MASK
    x = (((x >> 16) ^ x) * _MUL) & _MASK
    return (x >> 16) ^ x


def _label_value(label: int | str) -> int:
    if isinstance(label, str):
        return zlib.crc32(label.encode())  # stable across processes, unlike hash()
    return int(label) & _MASK


def keys(seeds: int | Sequence[int] | torch.Tensor | None, n: int, device: torch.device | str) -> torch.Tensor:
    """(n,) int64 keys from per-image seeds: a sequence/tensor (one seed per image), an int s (image i gets
    s + i) or None (image i gets i)."""
    if seeds is None:
        seeds = 0
    if isinstance(seeds, int):
        t = torch.arange(n, dtype=torch.long) + seeds
    else:
        t = torch.as_tensor(seeds, dtype=torch.long).flatten().cpu()
        if t.numel() != n:
            raise ValueError(f"got {t.numel()} seeds for {n} images")
    t = (t ^ (t >> 32)) & _MASK
    return _mix(t ^ 0x2545F491).to(device)


def derive(k: torch.Tensor, *labels: int | str) -> torch.Tensor:
    """New keys for one use (an attack, a restart, a target, an iteration): independent streams."""
    for label in labels:
        k = _mix(k ^ _mix(_label_value(label) ^ 0x68E31DA4))
    return k


def uniform(k: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """(N, *shape) float32 in [0, 1): element j of image i is a hash of (k[i], j)."""
    count = math.prod(shape)
    index = _mix(torch.arange(count, device=k.device, dtype=torch.long) ^ 0x1B873593)
    h = _mix(k[:, None] ^ index[None, :])
    return ((h >> 8).float() * (1.0 / (1 << 24))).view(k.shape[0], *shape)


def normal(k: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """(N, *shape) standard normal samples (Box-Muller on two uniform streams)."""
    u1 = uniform(derive(k, "normal-radius"), shape)
    u2 = uniform(derive(k, "normal-angle"), shape)
    return torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2 * math.pi * u2)


def signs(k: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """(N, *shape) values in {-1, +1}, each with probability 1/2."""
    return torch.where(uniform(k, shape) < 0.5, -1.0, 1.0)
