"""Detectors' and segmenters' figures: what the model found drawn over the photo, and `fool`'s before | change |
after panel for them and for Segment Anything and depth estimators (their tiles: figures/foundation.py)."""
from __future__ import annotations

from PIL import Image

from ..errors import DeepprobeError
from ..render import captioned, draw_detections, draw_segmentation, panel, segmentation_caption
from .fool import perturbation_tile


def is_drawable(found) -> bool:
    """Detections (boxes) or a Segmentation (class mask): what these figures draw."""
    return hasattr(found, "boxes") or hasattr(found, "areas")


def draw_found(image, found, alpha: float = 0.5) -> Image.Image:
    """Boxes (detector) or class colours (segmenter) over the image."""
    if hasattr(found, "boxes"):
        return draw_detections(image.cpu(), found)
    if hasattr(found, "areas"):
        return draw_segmentation(image.cpu(), found, alpha)
    raise DeepprobeError(f"no figure for a {type(found).__name__}")


def found_summary(found) -> str:
    """'person x2, dog' (boxes) or 'cat 31% · dog 12%' (classes)."""
    if hasattr(found, "boxes"):
        names = found.names
        return ", ".join(f"{n} x{names.count(n)}" if names.count(n) > 1 else n for n in dict.fromkeys(names)) \
            or "no box"
    return segmentation_caption(found)


def detections_figure(image, found, min_score: float) -> Image.Image:
    """`classify` on a detector: NAME_detections.png."""
    return captioned(draw_detections(image.cpu(), found), f"{len(found)} box(es) at score >= {min_score:g}")


def segmentation_figure(image, found, alpha: float = 0.5) -> Image.Image:
    """`classify` on a segmenter: NAME_segmentation.png."""
    return captioned(draw_segmentation(image.cpu(), found, alpha), segmentation_caption(found))


class TaskPictures:
    """Detectors (boxes) and segmenters (class colours): before and after, each with what the model found.
    (Segment Anything and depth draw theirs in figures/foundation.py, with the same three methods.)"""

    def tiles(self, original, adversarial, before, after, record) -> tuple[list, list[str]]:
        return ([draw_found(original, before), draw_found(adversarial, after)],
                [f"original: {found_summary(before)}", f"adversarial (saved PNG): {found_summary(after)}"])

    def summary(self, before, after, record) -> tuple[str, str]:
        return found_summary(before), found_summary(after)

    def cell(self, width: int) -> int:
        return max(224, width)


def pictures_for(found):
    """The tiles for what a model found: boxes or class colours, SAM's masks (PromptMasks), depth (DepthMap)."""
    from .foundation import DepthPictures, SamPictures

    if is_drawable(found):
        return TaskPictures()
    if hasattr(found, "prompt") and hasattr(found, "masks"):
        return SamPictures()
    if hasattr(found, "larger_is_nearer"):
        return DepthPictures()
    raise DeepprobeError(f"no figure for a {type(found).__name__}")


def attack_panel(pictures, original, adversarial, before, after, record: dict, name: str,
                 amplify: float | None = None) -> Image.Image:
    """`pictures`' before and after tiles with the amplified perturbation between them, titled with the verdict."""
    original, adversarial = original.cpu(), adversarial.cpu()
    middle, scale = perturbation_tile(original, adversarial, float((adversarial - original).abs().max()), amplify)
    tiles, captions = pictures.tiles(original, adversarial, before, after, record)
    tiles.insert(1, middle)
    captions.insert(1, f"perturbation x{scale:g}\nL-inf {record['linf_255']:g}/255 · L2 {record['l2']:.3f}")
    title = f"{name} · {record['method']} · {record['goal']} · {'fooled' if record['success'] else 'NOT fooled'}"
    return panel(tiles, captions, cell=pictures.cell(int(adversarial.shape[-1])), title=title)
