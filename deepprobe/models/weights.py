"""Reading weights files safely (weights_only / safetensors) and fitting them with a clear first mismatch."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import DeepprobeError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from .safetensors or a torch file, never unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise DeepprobeError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a weights file we can read"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeepprobeError(f"cannot read weights {path.name}: {first[:200]}") from exc
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DeepprobeError(f"{path.name} is not a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def fit_state_dict(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """load_state_dict that names the first missing, unexpected or mis-shaped key instead of dumping all."""
    own = net.state_dict()
    for key, value in own.items():
        if key not in state:
            raise DeepprobeError(f"weights {source} do not fit the architecture: missing key {key!r}")
        if tuple(state[key].shape) != tuple(value.shape):
            raise DeepprobeError(
                f"weights {source} do not fit the architecture: {key!r} has shape "
                f"{tuple(state[key].shape)}, the model expects {tuple(value.shape)}")
    extra = [k for k in state if k not in own]
    if extra:
        raise DeepprobeError(f"weights {source} do not fit the architecture: unexpected key {extra[0]!r}")
    net.load_state_dict(state, strict=True)


def map_in_order(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a state_dict whose names differ but whose tensors come in the same order and shapes."""
    own = net.state_dict()
    if len(own) != len(state):
        raise DeepprobeError(f"weights {source} have {len(state)} tensors, the architecture {len(own)}")
    mapped = {}
    for (key, value), (src_key, src_value) in zip(own.items(), state.items()):
        if tuple(value.shape) != tuple(src_value.shape):
            raise DeepprobeError(f"weights {source}: {src_key!r} {tuple(src_value.shape)} does not fit "
                                 f"{key!r} {tuple(value.shape)}")
        mapped[key] = src_value
    net.load_state_dict(mapped, strict=True)
