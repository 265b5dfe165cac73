"""Figures for Segment Anything (prompts and masks over the photo) and depth estimators (depth in colour)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .render import colorize, draw_boxes, mask_overlay, to_pil

PROMPT_COLOR = (255, 40, 200)
MASK_COLOR_INDEX = 4  # render.class_color's green: it stands out on most photos


def draw_prompt(image, prompt) -> Image.Image:
    """A SAM prompt over its image: each point as a ringed dot (background points hollow), the box as a frame."""
    pil = to_pil(image).copy()
    if prompt.box is not None:
        pil = draw_boxes(pil, [prompt.box], [""], classes=[6], min_side=0)  # tab20 red
    draw = ImageDraw.Draw(pil)
    radius = max(3, round(min(pil.size) / 60))
    for (x, y), label in zip(prompt.points, prompt.point_labels):
        shape = (x - radius, y - radius, x + radius, y + radius)
        draw.ellipse(shape, fill=PROMPT_COLOR if label else None, outline=(255, 255, 255), width=2)
    return pil


def draw_mask(image, mask, prompt=None, alpha: float = 0.5) -> Image.Image:
    """A (H,W) bool mask in colour over its image, with the prompt drawn if given."""
    pil = mask_overlay(image, np.where(np.asarray(mask, dtype=bool), MASK_COLOR_INDEX, -1), alpha=alpha, skip=-1)
    return draw_prompt(pil, prompt) if prompt is not None else pil


def depth_image(nearness, low: float | None = None, high: float | None = None, colormap: str = "Spectral_r"):
    """(H,W) nearness (larger = nearer) in colour: near red, far blue (Depth Anything's demo colours); `low`/`high`
    fix the scale, so two maps drawn with the same ones compare."""
    values = np.asarray(nearness, dtype=np.float32)
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else high
    return Image.fromarray(colorize((values - low) / max(high - low, 1e-12), colormap))
