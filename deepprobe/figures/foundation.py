"""Segment Anything's and depth estimators' figures: SAM's candidate masks for a prompt with their predicted IoU
scores, the depth in colour beside the photo, and `fool`'s before and after tiles for both (the perturbation
tile between them is `tasks.attack_panel`'s). Results are read by their fields (PromptMasks: prompt, masks;
DepthMap: depth, larger_is_nearer), so this module needs no model code."""
from __future__ import annotations

from PIL import Image

from ..render import draw_boxes, panel
from ..render_sam_depth import depth_image, draw_mask, draw_prompt


def cell_for(width: int) -> int:
    """The panels' tile size: the photo's width, between 224 and 400 px."""
    return max(224, min(int(width), 400))


def prompt_masks_figure(photo, masks, name: str, alpha: float = 0.5) -> Image.Image:
    """`classify --point/--box` on SAM: the input with its prompt | each candidate mask with its IoU score and
    area (NAME_sam_K_PROMPT.png)."""
    photo = photo.detach().cpu()
    tiles = [draw_prompt(photo, masks.prompt)] + [draw_mask(photo, m, masks.prompt, alpha) for m in masks.masks]
    captions = [f"input · {masks.prompt.describe()}"] + [
        f"mask {r['candidate']}{' (chosen)' if r['chosen'] else ''}\nIoU score {r['iou_score']:.3f} · "
        f"area {r['area']:.1%}" for r in masks.records()]
    return panel(tiles, captions, cell=cell_for(photo.shape[-1]), title=f"{name} · SAM · {masks.prompt.describe()}")


def depth_meaning(depth_map) -> str:
    return "larger = nearer (inverse depth)" if depth_map.larger_is_nearer else "larger = farther"


def depth_colour(depth_map) -> Image.Image:
    """The depth in colour at the input's size, near red, far blue (NAME_depth.png)."""
    return depth_image(depth_map.nearness().numpy())


def depth_panel(photo, depth_map, name: str, model_title: str, colour: Image.Image | None = None) -> Image.Image:
    """`classify` on a depth estimator: photo | depth in colour, the region framed and its mean depth given
    (NAME_depth_panel.png)."""
    photo = photo.detach().cpu()
    stats = depth_map.as_dict()
    region = depth_map.region
    boxes = [region] if region else []
    colour = depth_colour(depth_map) if colour is None else colour
    tiles = [draw_boxes(photo, boxes, [""] * len(boxes), min_side=0),
             draw_boxes(colour, boxes, [""] * len(boxes), min_side=0)]
    shown = f"\nregion mean {stats['region_mean']:.4g}" if region else ""
    captions = [f"input · {name}", f"depth {stats['min']:.4g} .. {stats['max']:.4g} · near red, far blue{shown}"]
    return panel(tiles, captions, cell=cell_for(photo.shape[-1]),
                 title=f"{name} · {model_title} · {depth_meaning(depth_map)}")


class SamPictures:
    """`fool` on SAM: original + clean mask | adversarial + its mask (the perturbation tile goes between)."""

    alpha = 0.5  # the masks' opacity (fool's --alpha is the attack's step)

    def tiles(self, original, adversarial, before, after, record):
        tiles = [draw_mask(original, before.mask, before.prompt, self.alpha),
                 draw_mask(adversarial, after.mask, after.prompt, self.alpha)]
        return tiles, [f"original: mask {before.chosen}, area {float(before.mask.float().mean()):.1%}",
                       f"adversarial (saved PNG): mask {after.chosen}\nIoU with the clean mask "
                       f"{record['iou_with_clean']:.3f}"]

    def summary(self, before, after, record) -> tuple[str, str]:
        return f"mask {before.chosen}", f"IoU {record['iou_with_clean']:.3f} with it"

    cell = staticmethod(cell_for)  # the tile size from the photo's width


class DepthPictures:
    """`fool` on a depth estimator: original | adversarial, then depth before | depth after on one colour scale,
    the region framed."""

    def tiles(self, original, adversarial, before, after, record):
        import numpy as np

        def framed(image):
            return draw_boxes(image, [before.region], [""], min_side=0)
        near = [before.nearness().numpy(), after.nearness().numpy()]
        low, high = float(min(np.min(v) for v in near)), float(max(np.max(v) for v in near))
        depth = [framed(depth_image(v, low, high)) for v in near]
        rest = "" if record["rest_factor"] is None else f" · rest x{record['rest_factor']:.3g}"
        return [framed(original), framed(adversarial), *depth], [
            "original", "adversarial (saved PNG)", f"depth before: region {record['region_mean_before']:.4g}",
            f"depth after: region {record['region_mean_after']:.4g}\nmoved x{record['factor']:.3g} "
            f"(asked x{record['factor_asked']:g}){rest}"]

    def summary(self, before, after, record) -> tuple[str, str]:
        return f"{record['region_mean_before']:.4g}", f"{record['region_mean_after']:.4g} (x{record['factor']:.3g})"

    cell = staticmethod(cell_for)  # the tile size from the photo's width
