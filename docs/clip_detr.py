"""Make docs/clip_explain.jpg and docs/detr_explain.jpg from tiny CLIP and DETR models trained on the spot.

No CLIP or DETR weights exist offline, so this trains the test suite's synthetic task (tests/tiny_hf.py:
coloured squares, circles and triangles on grey noise), saves both models the way a user saves a real
checkpoint, loads them through `hf:DIR` and draws what the API gives:
- CLIP: zero-shot probabilities, Chefer's bi-modal relevance for each prompt (with the words' relevance) and
  Grad-CAM on the image tower; a targeted attack to another prompt, measured on the 8-bit image;
- DETR: the boxes and Chefer's encoder-decoder relevance of each box's query.

    python docs/clip_detr.py          # about six minutes on one CPU core (DETR is slow to learn boxes)

It also prints the figures the README quotes (zero-shot accuracy, how often each map favours the object its
prompt or box names, attack success, DETR's box quality).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tiny_hf import CLASS_NAMES, PROMPTS, save_clip, save_detr, scenes, train_clip, train_detr  # noqa: E402

import deepprobe as dp  # noqa: E402
from deepprobe.render import draw_detections, grid, overlay  # noqa: E402

CLIP_SIZE, DETR_SIZE, CELL = 48, 64, 170


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
            top = max(words.scores)
            captions.append(f"chefer '{prompt}'\n" + " ".join(f"{t} {v / top:.2f}".replace("0.", ".")
                                                              for t, v in zip(words.tokens, words.scores)))
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
                  title="tiny DETR on hf:DIR: boxes, Chefer per box")
    save(figure, "detr_explain.jpg")


def mass_on(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return (maps * masks).flatten(1).sum(1) / masks.flatten(1).sum(1)


def clip_numbers(folder: Path) -> None:
    probe = dp.load_model(f"hf:{folder}", device="cpu")
    x, classes, _, _ = scenes(200, seed=5, size=CLIP_SIZE)
    for prompts in (PROMPTS, [f"a photo of a {n}." for n in CLASS_NAMES]):
        probe.set_prompts(prompts)
        accuracy = (probe.predict(x).argmax(1) == classes[:, 0]).float().mean()
        print(f"CLIP zero-shot accuracy, prompts like {prompts[0]!r}: {accuracy:.0%}")
    probe.set_prompts(PROMPTS)
    pairs, pair_classes, _, masks = scenes(50, seed=9, size=CLIP_SIZE, objects_per_image=2)
    for method in ("chefer", "gradcam++", "gradcam", "saliency", "rollout"):
        wins = [mass_on(dp.explain(probe, pairs, method, target=pair_classes[:, j]), masks[:, j])
                > mass_on(dp.explain(probe, pairs, method, target=pair_classes[:, j]), masks[:, 1 - j])
                for j in (0, 1)]
        print(f"CLIP {method}: more mass on the prompt's object in {torch.cat(wins).float().mean():.0%} of 100 maps")
    for eps in (8, 16):
        res = dp.attack(probe, x[:20], target=(classes[:20, 0] + 1) % 3, eps=eps / 255, steps=40)
        print(f"CLIP pgd to another prompt at {eps}/255: {res.success.float().mean():.0%} of 20 (saved 8-bit)")


def detr_numbers(folder: Path) -> None:
    from torchvision.ops import box_iou

    probe = dp.load_model(f"hf:{folder}", device="cpu")
    x, classes, boxes, masks = scenes(40, seed=31, size=DETR_SIZE, objects_per_image=2)
    ious, right, inside, area, favours = [], [], [], [], []
    for i in range(len(x)):
        (found,) = dp.explain(probe, x[i:i + 1], "chefer", min_score=0.5)
        for box, label, heat in zip(found.detections.boxes, found.detections.labels, found.maps):
            overlap = box_iou(box[None], boxes[i])[0]
            j = int(overlap.argmax())
            ious.append(float(overlap[j]))
            right.append(int(label) == int(classes[i, j]))
            x0, y0, x1, y1 = (int(round(float(v))) for v in box.clamp(0, DETR_SIZE))
            inside_box = torch.zeros(DETR_SIZE, DETR_SIZE)
            inside_box[y0:y1, x0:x1] = 1
            inside.append(float((heat * inside_box).sum() / heat.sum()))
            area.append(float(inside_box.mean()))
            favours.append(float(mass_on(heat[None], masks[i, j][None]) > mass_on(heat[None], masks[i, 1 - j][None])))
    n = len(ious)
    print(f"DETR: {n} boxes for {2 * len(x)} objects, mean IoU {sum(ious) / n:.2f}, right class {sum(right) / n:.0%}")
    print(f"DETR chefer: {sum(inside) / n:.0%} of a map's mass inside its box (the box: {sum(area) / n:.0%} of the "
          f"image); more mass on its own object than on the other in {sum(favours) / n:.0%}")


def save(figure, name: str) -> None:
    out = ROOT / "docs" / name
    figure.convert("RGB").save(out, quality=85)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB), {figure.size}")


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        clip = save_clip(*train_clip(steps=80, size=CLIP_SIZE), Path(tmp) / "clip", CLIP_SIZE)
        clip_figure(clip)
        clip_numbers(clip)
        detr = save_detr(train_detr(), Path(tmp) / "detr", DETR_SIZE)
        detr_figure(detr)
        detr_numbers(detr)


if __name__ == "__main__":
    main()
