"""Turning IMAGE arguments into batches of model-ready tensors, recording files that fail."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DeepprobeError, ImageError

if TYPE_CHECKING:  # torch is imported where it is used (a fast CLI start)
    import torch


def image_paths(run, inputs: list[str]) -> list[Path]:
    """Expand files/folders/globs; unusable entries are recorded as failures, none left is an error."""
    from ..io import find_images

    paths, problems = find_images(inputs)
    if not paths:  # one line for the whole run rather than one per input and then a summary
        detail = "; ".join(f"{item}: {reason}" for item, reason in problems[:3])
        raise DeepprobeError("no readable images given" + (f" ({detail})" if detail else ""))
    for item, reason in problems:
        run.fail(item, reason)
    return paths


def batches(run, bundle, paths: list[Path], batch_size: int) -> Iterator[tuple[list[Path], "torch.Tensor"]]:
    """Yield (paths, (N,3,H,W) tensor) chunks; images that fail to load are reported and skipped."""
    import torch

    chunk_paths, chunk = [], []
    for path in paths:
        try:
            chunk.append(bundle.load_image(path))
            chunk_paths.append(path)
        except ImageError as exc:
            run.fail(str(path), str(exc))
            continue
        if len(chunk) == batch_size:
            yield chunk_paths, torch.cat(chunk)
            chunk_paths, chunk = [], []
    if chunk:
        yield chunk_paths, torch.cat(chunk)
