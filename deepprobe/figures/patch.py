"""`patch`'s figures: the preview beside a trained patch (the patch | patched training photos) and `patch apply`'s
grid of patched photos, each captioned with what the model sees and the target's probability."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from PIL import Image

from ..render import grid

SHOWN = 12  # `patch apply` shows the first photos only


def applied_caption(class_name: Callable[[int], str], applied, i: int) -> str:
    """'toaster · p(toaster)=0.93' for the i-th photo of an AppliedPatch."""
    seen = class_name(int(applied.predicted[i]))
    return f"{seen} · p({class_name(applied.target)})={float(applied.target_prob[i]):.2f}"


def preview_grid(tiles: Sequence, captions: Sequence[str], title: str) -> Image.Image:
    """The grid beside a trained patch (classifier and detector patches alike)."""
    return grid(list(tiles), list(captions), cell=200, title=title)


def patch_preview(patch, applied, class_name: Callable[[int], str], size: float, train_success: float) -> Image.Image:
    """`patch train`'s patch_NAME_preview.png: the patch | the patched training photos (random placement)."""
    target = class_name(applied.target)
    captions = [f"patch -> {target}"] + [applied_caption(class_name, applied, i) for i in range(len(applied.images))]
    title = (f"patch ({size:g} of the side) on training photos, random placement; "
             f"{train_success:.0%} of training photos read as {target}")
    return preview_grid([patch] + list(applied.images), captions, title)


def applied_grid(images: Sequence, captions: Sequence[str], fooled: int, total: int, target: str) -> Image.Image:
    """`patch apply`'s NAME_applied_panel.png: up to SHOWN patched photos, four to a row."""
    return grid(list(images), list(captions), columns=min(len(images), 4), cell=200,
                title=f"{fooled}/{total} fooled -> {target}")
