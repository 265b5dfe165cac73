"""`explain`'s figures: a heat map over its photo, captioned with method, CAM layer, class and probability."""
from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from ..render import draw_detections, grid, overlay


def method_label(method: str, layer: str | None) -> str:
    """'gradcam @ bn2' for a CAM (its layer), the method's name for the rest."""
    return method + (f" @ {layer}" if layer else "")


def map_caption(method: str, layer: str | None, class_name: str | None, probability: float | None,
                class_free: bool = False) -> str:
    """Two lines: the method (and CAM layer), then the class explained and its probability."""
    what = method_label(method, layer)
    if class_name is None:
        return what
    p = f" {probability:.1%}" if probability is not None else ""
    if class_free:
        return f"{what} (class-free)\ntop: {class_name}{p}"
    return f"{what}\n{class_name}{p}"


def maps_grid(photos, heats, captions: Sequence[str], title: str, alpha: float = 0.5,
              columns: int = 4) -> Image.Image:
    """One captioned overlay per image (what `explain` writes as NAME_METHOD_CLASS.png), side by side."""
    tiles = [overlay(photo, heat.numpy(), alpha=alpha) for photo, heat in zip(photos, heats)]
    return grid(tiles, captions, columns=min(len(tiles), columns), cell=224, title=title)


def box_maps_grid(photo, box_maps, label: str, title: str, alpha: float = 0.5, columns: int = 4) -> Image.Image:
    """A detector's explanation: one overlay per box, the box drawn on it, captioned 'method\\nclass score'."""
    import torch

    found = box_maps.detections
    tiles, captions = [], []
    for k in range(len(found)):
        one = found.select(torch.tensor([k]))
        tiles.append(draw_detections(overlay(photo, box_maps.maps[k].cpu().numpy(), alpha=alpha), one))
        captions.append(f"{label}\n{one.names[0]} {float(one.scores[0]):.2f}")
    if not tiles:
        tiles, captions = [photo], ["no box at the asked score"]
    return grid(tiles, captions, columns=min(len(tiles), columns), cell=224, title=title)


def heads_grid(photo, heads, block: str | int | None, name: str, alpha: float = 0.5) -> Image.Image:
    """DINO's figure: the photo, then the CLS token's attention of every head over it, one tile each (what
    `explain --method attention` writes as NAME_attention_heads.png)."""
    tiles = [overlay(photo, h.numpy(), alpha=alpha) for h in heads]
    block = block if block not in (None, "") else "last"
    return grid([photo] + tiles, ["input"] + [f"head {k}" for k in range(len(tiles))], columns=min(len(tiles) + 1, 7),
                cell=160, title=f"{name} · CLS attention per head · block {block}")
