"""`age`'s panel: the face as it was | the face in each edited photo, captioned with the age read on it."""
from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from ..render import panel


def age_panel(photo, edited, crop: Sequence[int], before: float, targets: Sequence[float],
              after: Sequence[float | None], name: str, face_index: int) -> Image.Image:
    """`photo` (1,3,H,W) and `edited` ((T,3,H,W), one per target, as saved) cut to the face's `crop` box
    (left, top, right, bottom); `after` the ages read on the edited photos (None: the face was lost)."""
    left, top, right, bottom = crop
    tiles = [photo[0, :, top:bottom, left:right]] + [e[:, top:bottom, left:right] for e in edited]
    captions = [f"input · age {before:.1f}"] + [
        f"target {goal:g} · age {age:.1f}" if age is not None else f"target {goal:g} · face lost"
        for goal, age in zip(targets, after)]
    title = f"{name}: face {face_index}, ages read by the dlib age model on the saved files"
    return panel(tiles, captions, cell=256, title=title)
