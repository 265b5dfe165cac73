"""Make docs/sam_depth.jpg from the test suite's tiny Segment Anything and Depth Anything and its analytic depth net.

No SAM or Depth Anything weights exist offline, so the figure uses the SMALL RANDOM models the tests build
(tests/tiny_foundation.py: random weights redrawn at unit gain, saved with save_pretrained and their processors,
loaded through `hf:DIR`) and BrightnessDepth, whose depth is exp(8 * (local brightness - 0.5)): the masks and
depths of the random models mean nothing, the machinery around them is what is shown.

    python docs/sam_depth.py          # under a minute on one CPU core

It also prints the figures the README quotes (vanish and factor success over the example photos).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tiny_foundation import save_depth_anything, save_sam  # noqa: E402

import deepprobe as dp  # noqa: E402
from deepprobe.models.sam_masks import mask_iou  # noqa: E402
from deepprobe.render import draw_boxes, grid, overlay  # noqa: E402
from deepprobe.render_sam_depth import depth_image, draw_mask, draw_prompt  # noqa: E402

PHOTOS = sorted((ROOT / "examples").glob("*.jpg"))
CAT = ROOT / "examples" / "cat.jpg"
REGION = (100, 50, 200, 150)  # the cat's left eye
CELL = 210


def sam_row(probe) -> tuple[list, list[str]]:
    x = dp.read_image(CAT)
    prompt = dp.Prompt.point(150, 100)
    found = dp.segment_prompts(probe, x, [prompt])[0][0]
    tiles = [draw_prompt(x[0], prompt)]
    captions = [f"SAM (tiny, random): {prompt.describe()}"]
    for k, mask in enumerate(found.masks):
        tiles.append(draw_mask(x[0], mask, prompt))
        captions.append(f"mask {k}{' (chosen)' if k == found.chosen else ''}: IoU score {float(found.scores[k]):.2f}")
    heat = dp.explain(probe, x, "hirescam", prompt=prompt)[0]
    tiles.append(draw_prompt(overlay(x[0], heat.numpy(), 0.55), prompt))
    captions.append("hirescam: what drives the chosen mask")
    res = dp.fool_prompt(probe, x, prompt, kappa=0.05)
    after = dp.segment_prompts(probe, res.images, [prompt])[0][0]
    tiles.append(draw_mask(res.images[0], after.mask, prompt))
    captions.append(f"fool 8/255: IoU with clean mask {float(mask_iou(after.mask, found.mask)):.2f}")
    return tiles, captions


def depth_row(probe, name: str, factor: float, eps: float) -> tuple[list, list[str]]:
    x = dp.read_image(CAT)
    clean = dp.estimate_depth(probe, x, REGION)[0]
    frame = lambda image: draw_boxes(image, [REGION], [""], min_side=0)  # noqa: E731
    heat = dp.explain(probe, x, "hirescam", region=REGION)[0]
    res = dp.fool_depth(probe, x, REGION, nearer=True, factor=factor, eps=eps)
    after = res.after[0]
    near = [clean.nearness(), after.nearness()]
    low, high = float(min(v.min() for v in near)), float(max(v.max() for v in near))
    tiles = [frame(x[0]), frame(depth_image(near[0].numpy(), low, high)), frame(overlay(x[0], heat.numpy(), 0.55)),
             frame(res.images[0]), frame(depth_image(near[1].numpy(), low, high))]
    notes = res.records()[0]
    captions = [f"{name}", "depth (near red, far blue)", "hirescam: what drives the region's depth",
                f"fool --nearer x{factor:g}, L-inf {eps * 255:g}/255", f"depth after: region x{notes['factor']:.2f} "
                f"nearer, rest x{notes['rest_factor']:.2f}"]
    return tiles, captions


def numbers(sam, depth_anything, bright) -> None:
    vanished, total = 0, 0
    for path in PHOTOS:
        x = dp.read_image(path)
        h, w = x.shape[-2:]
        prompts = [dp.Prompt.point(0.3 * w, 0.4 * h), dp.Prompt.point(0.7 * w, 0.6 * h),
                   dp.Prompt.of_box(0.2 * w, 0.2 * h, 0.8 * w, 0.8 * h)]
        for prompt in prompts:
            vanished += bool(dp.fool_prompt(sam, x, prompt, kappa=0.05).success[0])
            total += 1
    print(f"tiny SAM: the chosen mask vanished (IoU < 0.1 on the 8-bit image) for {vanished} of {total} prompts "
          "at 8/255")
    for probe, name, factor, eps in ((depth_anything, "tiny Depth Anything", 1.2, 32 / 255),
                                     (bright, "BrightnessDepth", 1.5, 24 / 255)):
        reached = [dp.fool_depth(probe, dp.read_image(p), REGION, nearer=True, factor=factor, eps=eps).records()[0]
                   for p in PHOTOS]
        print(f"{name}: x{factor:g} nearer at {eps * 255:g}/255 reached on {sum(r['success'] for r in reached)} of "
              f"{len(reached)} photos; rest moved x{max(r['rest_factor'] for r in reached):.3f} at most")


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        sam = dp.load_model(f"hf:{save_sam(Path(tmp) / 'sam')}", device="cpu")
        depth_anything = dp.load_model(f"hf:{save_depth_anything(Path(tmp) / 'depth')}", device="cpu")
        bright = dp.load_model("python:tiny_foundation:brightness_depth", device="cpu")
        rows = [sam_row(sam), depth_row(depth_anything, "Depth Anything (tiny, random)", 1.2, 32 / 255),
                depth_row(bright, "BrightnessDepth (analytic)", 1.5, 24 / 255)]
        for row in rows[1:]:  # a blank of the photo's shape ends the shorter rows
            row[0].append(torch.ones(3, 266, 400))
            row[1].append("")
        tiles = [t for row in rows for t in row[0]]
        captions = [c for row in rows for c in row[1]]
        figure = grid(tiles, captions, columns=6, cell=CELL,
                      title="SMALL RANDOM test models (tests/tiny_foundation.py): SAM masks, explain, vanish; depth, "
                            "explain --region, fool --nearer")
        out = ROOT / "docs" / "sam_depth.jpg"
        figure.convert("RGB").save(out, quality=85)
        print(f"wrote {out} ({out.stat().st_size // 1024} KB), {figure.size}")
        numbers(sam, depth_anything, bright)


if __name__ == "__main__":
    main()
