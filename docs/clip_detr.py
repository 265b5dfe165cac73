"""Make docs/clip_explain.jpg and docs/detr_explain.jpg from tiny CLIP and DETR models trained on the spot.

No CLIP or DETR weights exist offline, so this trains the test suite's synthetic task (tests/tiny_hf.py:
coloured squares, circles and triangles on grey noise), saves both models the way a user saves a real
checkpoint, loads them through `hf:DIR` and draws what the API gives:
- CLIP: zero-shot probabilities, Chefer's bi-modal relevance for each prompt (with the words' relevance) and
  Grad-CAM on the image tower; a targeted attack to another prompt, measured on the 8-bit image;
- DETR: the boxes and Chefer's encoder-decoder relevance of each box's query.

    python docs/clip_detr.py          # about five minutes on one CPU core (DETR is slow to learn boxes)
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tiny_hf import PROMPTS, save_clip, save_detr, scenes, train_clip, train_detr  # noqa: E402

import deepprobe as dp  # noqa: E402
from deepprobe.render import draw_detections, grid, overlay  # noqa: E402

CLIP_SIZE, DETR_SIZE, CELL = 48, 64, 150


def clip_figure(folder: Path) -> None:
    probe = dp.load_model(f"hf:{folder}", device="cpu").set_prompts(PROMPTS)
    x, classes, _, _ = scenes(2, seed=21, size=CLIP_SIZE, objects_per_image=2)
    tiles, captions = [], []
    for i in range(len(x)):
        named = [PROMPTS[c] for c in classes[i].tolist()]
        top = dp.classify(probe, x[i:i + 1], top=3)[0]
        tiles.append(x[i])
        captions.append(" · ".join(f"{t} {p:.0%}" for t, p in zip(top.labels[:2], top.probabilities[:2])))
        for prompt in named:
            target = PROMPTS.index(prompt)
            words = dp.text_relevance(probe, x[i:i + 1], target)[0]
            tiles.append(overlay(x[i], dp.explain(probe, x[i:i + 1], "chefer", target=target)[0].numpy(), 0.55))
            captions.append(f"chefer '{prompt}'\n{words.line()}")
        for prompt in named:
            heat = dp.explain(probe, x[i:i + 1], "gradcam", target=PROMPTS.index(prompt))[0]
            tiles.append(overlay(x[i], heat.numpy(), 0.55))
            captions.append(f"gradcam '{prompt}'")
    # a targeted attack: the first scene's object read as another prompt
    single, cls, _, _ = scenes(1, seed=5, size=CLIP_SIZE)
    target = next(p for p in PROMPTS if p != PROMPTS[int(cls[0, 0])])
    res = dp.attack(probe, single, target=PROMPTS.index(target), eps=16 / 255, steps=40)
    delta = (res.images - res.original)[0]
    tiles += [single[0], (0.5 + 4 * delta).clamp(0, 1), res.images[0]]
    captions += [f"original: {probe.class_name(int(res.original_class))} {float(res.original_prob):.0%}",
                 "perturbation x4 (L-inf 16/255)",
                 f"adversarial 8-bit: {probe.class_name(int(res.final_class))} {float(res.final_prob):.0%}"]
    tiles += [torch.ones(3, CLIP_SIZE, CLIP_SIZE)] * 2
    captions += ["", ""]
    figure = grid(tiles, captions, columns=5, cell=CELL,
                  title="tiny CLIP (48 px, 8 px patches) on hf:DIR: zero-shot, Chefer per prompt, Grad-CAM, PGD to a prompt")
    save(figure, "clip_explain.jpg")


def detr_figure(folder: Path) -> None:
    probe = dp.load_model(f"hf:{folder}", device="cpu")
    x, _, _, _ = scenes(3, seed=31, size=DETR_SIZE, objects_per_image=2)
    tiles, captions = [], []
    for i in range(len(x)):
        (found,) = dp.explain(probe, x[i:i + 1], "chefer", min_score=0.5)
        tiles.append(draw_detections(x[i], found.detections))
        captions.append(f"{len(found.detections)} boxes at score >= 0.5")
        for k in range(2):
            if k < len(found.detections):
                one = found.detections.select(torch.tensor([k]))
                tiles.append(draw_detections(overlay(x[i], found.maps[k].numpy(), 0.55), one))
                captions.append(f"chefer: {one.names[0]} {float(one.scores[0]):.2f}")
            else:
                tiles.append(torch.ones(3, DETR_SIZE, DETR_SIZE))
                captions.append("")
    figure = grid(tiles, captions, columns=3, cell=CELL,
                  title="tiny DETR (64 px, 8x8 feature grid) on hf:DIR: boxes and Chefer's relevance per box")
    save(figure, "detr_explain.jpg")


def save(figure, name: str) -> None:
    out = ROOT / "docs" / name
    figure.convert("RGB").save(out, quality=85)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB), {figure.size}")


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        clip = save_clip(*train_clip(steps=80, size=CLIP_SIZE), Path(tmp) / "clip", CLIP_SIZE)
        clip_figure(clip)
        detr = save_detr(train_detr(), Path(tmp) / "detr", DETR_SIZE)
        detr_figure(detr)


if __name__ == "__main__":
    main()
