"""Captioned panels and grids (PIL), shared by every command that shows images side by side."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CAPTION_HEIGHT = 34
BACKGROUND = (255, 255, 255)


def to_pil(image) -> Image.Image:
    """A [0,1] tensor (3,H,W)/(1,3,H,W), an HxWx3 uint8/float array, or a PIL image -> RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        arr = image if image.dtype == np.uint8 else (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    from .io import to_uint8

    return Image.fromarray(to_uint8(image))


def _font(size: int = 13) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def captioned(image, caption: str, width: int | None = None) -> Image.Image:
    """The image (scaled to `width` if given) with up to two lines of caption underneath."""
    pil = to_pil(image)
    if width and pil.width != width:
        pil = pil.resize((width, max(1, round(pil.height * width / pil.width))), Image.LANCZOS)
    canvas = Image.new("RGB", (pil.width, pil.height + CAPTION_HEIGHT), BACKGROUND)
    canvas.paste(pil, (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for i, line in enumerate(_wrap(caption, draw, font, pil.width - 6)[:2]):
        draw.text((3, pil.height + 2 + 15 * i), line, fill=(0, 0, 0), font=font)
    return canvas


def _wrap(text: str, draw, font, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in paragraph.split(" "):
            trial = f"{current} {word}".strip()
            if draw.textlength(trial, font=font) <= width or not current:
                current = trial
            else:
                lines.append(current)
                current = word
        lines.append(current)
    return lines


def grid(images: Sequence, captions: Sequence[str] | None = None, columns: int | None = None,
         cell: int = 224, title: str | None = None, gap: int = 6) -> Image.Image:
    """Images in a grid of `columns` (default: one row up to 6), each captioned, optional title on top."""
    captions = list(captions) if captions is not None else [""] * len(images)
    tiles = [captioned(im, cap, width=cell) for im, cap in zip(images, captions)]
    columns = columns or min(len(tiles), 6)
    rows = math.ceil(len(tiles) / columns)
    tile_h = max(t.height for t in tiles)
    top = 24 if title else 0
    canvas = Image.new("RGB", (columns * cell + (columns + 1) * gap, top + rows * tile_h + (rows + 1) * gap),
                       BACKGROUND)
    if title:
        ImageDraw.Draw(canvas).text((gap, 5), title, fill=(0, 0, 0), font=_font(15))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas.paste(tile, (gap + c * (cell + gap), top + gap + r * (tile_h + gap)))
    return canvas


def amplification(linf: float, chosen: float | None = None) -> float:
    """How much to amplify a perturbation in a panel: `chosen`, or a power of two that makes the largest change
    fill about half the grey range (x1 at least)."""
    if chosen is not None:
        return float(chosen)
    if linf <= 0:
        return 1.0
    return float(2 ** max(0, round(math.log2(0.5 / linf))))


def panel(images: Sequence, captions: Sequence[str], cell: int = 224, title: str | None = None) -> Image.Image:
    """One row: e.g. original | perturbation | adversarial."""
    return grid(images, captions, columns=len(images), cell=cell, title=title)


def colorize(values: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """(H,W) in [0,1] -> (H,W,3) uint8 through a matplotlib colormap."""
    from matplotlib import colormaps

    rgba = colormaps[colormap](np.clip(values, 0, 1))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def overlay(image, heat: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
    """A heat map blended over an image of the same size."""
    base = np.asarray(to_pil(image), dtype=np.float32)
    if heat.shape != base.shape[:2]:
        heat = np.asarray(Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8)).resize(
            (base.shape[1], base.shape[0]), Image.BILINEAR), dtype=np.float32) / 255
    colored = colorize(heat, colormap).astype(np.float32)
    return Image.fromarray(((1 - alpha) * base + alpha * colored).round().astype(np.uint8))


def class_color(index: int) -> tuple[int, int, int]:
    """A distinct colour per class index (matplotlib's tab20, cycled), the same in every figure."""
    from matplotlib import colormaps

    r, g, b, _ = colormaps["tab20"](int(index) % 20)
    return round(r * 255), round(g * 255), round(b * 255)


def draw_boxes(image, boxes: Sequence[Sequence[float]], captions: Sequence[str],
               classes: Sequence[int] | None = None, width: int = 2, min_side: int = 224) -> Image.Image:
    """Boxes (xyxy in the image's pixels) drawn over the image, each with its caption on a coloured tag.

    An image whose short side is under `min_side` is enlarged first (an integer factor, nearest neighbour), so
    captions stay readable on small inputs; boxes are scaled with it.
    """
    pil = to_pil(image).copy()
    factor = max(1, math.ceil(min_side / max(1, min(pil.size))))
    if factor > 1:
        pil = pil.resize((pil.width * factor, pil.height * factor), Image.NEAREST)
        boxes = [[float(v) * factor for v in box] for box in boxes]
    draw = ImageDraw.Draw(pil)
    font = _font(12)
    classes = list(classes) if classes is not None else list(range(len(boxes)))
    for box, caption, cls in zip(boxes, captions, classes):
        x0, y0, x1, y1 = (float(v) for v in box)
        color = class_color(cls)
        draw.rectangle((x0, y0, x1, y1), outline=color, width=width)
        if caption:
            left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
            tag_h = bottom - top + 4
            ty = y0 - tag_h if y0 - tag_h >= 0 else y0
            draw.rectangle((x0, ty, x0 + right - left + 6, ty + tag_h), fill=color)
            draw.text((x0 + 3, ty + 2 - top), caption, fill=(255, 255, 255), font=font)
    return pil


def mask_overlay(image, mask: np.ndarray, alpha: float = 0.5, skip: int | None = None) -> Image.Image:
    """Each pixel's class (an (H,W) int array) blended over the image in its class colour; `skip` stays clear."""
    base = np.asarray(to_pil(image), dtype=np.float32)
    mask = np.asarray(mask)
    colors = np.zeros_like(base)
    shown = np.zeros(mask.shape, dtype=bool)
    for cls in np.unique(mask):
        if skip is not None and cls == skip:
            continue
        where = mask == cls
        colors[where] = class_color(int(cls))
        shown |= where
    blend = np.where(shown[..., None], (1 - alpha) * base + alpha * colors, base)
    return Image.fromarray(blend.round().astype(np.uint8))


def draw_detections(image, detections) -> Image.Image:
    """A `Detections` (boxes, labels, scores, names) drawn over its image: 'class 0.93' on each box."""
    captions = [f"{name} {float(score):.2f}" for name, score in zip(detections.names, detections.scores)]
    return draw_boxes(image, detections.boxes.tolist(), captions, detections.labels.tolist())


def draw_segmentation(image, segmentation, alpha: float = 0.5) -> Image.Image:
    """A `Segmentation`'s class colours over its image (background left clear)."""
    return mask_overlay(image, segmentation.mask.numpy(), alpha=alpha, skip=segmentation.background)


def segmentation_caption(segmentation, most: int = 4) -> str:
    """'cat 31% · dog 12%' for the largest classes other than background."""
    shown = [f"{segmentation.names[c]} {segmentation.areas[c]:.0%}" for c in segmentation.present()[:most]]
    return " · ".join(shown) or "background only"
