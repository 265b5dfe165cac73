"""Make docs/embedding_panel.jpg and print the figures the README's embedder section quotes.

No DINO, DINOv2 or CLIP weights exist offline, so:
- the attention figure comes from a SMALL RANDOM DINOv2 (Dinov2Config, 4 blocks, 6 heads, random weights) saved
  with save_pretrained and loaded through hf:DIR: it shows the figure's layout, not what DINO learned;
- similarity, the feature attack and k-NN run on a real backbone: the bundled EfficientNet-Lite0 without its
  classifier (ImageNet features), over the example photos and a gallery of other views of them.

    python docs/embedding_figures.py          # a few minutes on one CPU core
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tiny_embedders import PHOTOS, make_gallery, save_headless_lite0  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import deepprobe as dp  # noqa: E402
from deepprobe.cli import app  # noqa: E402
from deepprobe.io import quantize, save_png  # noqa: E402
from deepprobe.techniques.fool_embedding import feature_attack  # noqa: E402
from deepprobe.techniques.knn import nearest  # noqa: E402

EXAMPLES = ROOT / "examples"


def cli(*args) -> dict:
    res = CliRunner().invoke(app, [str(a) for a in args] + ["--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def random_dinov2(folder: Path) -> Path:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(image_size=224, patch_size=14, hidden_size=96, num_hidden_layers=4,
                             num_attention_heads=6, intermediate_size=192)).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def measure_attacks(backbone: Path, gallery_dir: Path) -> None:
    """Feature PGD from each photo toward each other one, at L-inf 8/255: cosines and retrieval, on 8-bit images."""
    from deepprobe.cli.gallery import gallery_files
    from deepprobe.techniques.knn import build_gallery

    probe = dp.load_model("timm:tf_efficientnet_lite0", weights=backbone, device="cpu")
    photos = torch.cat([probe.load_image(EXAMPLES / f"{p}.jpg") for p in PHOTOS])
    files = gallery_files(str(gallery_dir))
    gallery = build_gallery(probe, torch.cat([probe.load_image(f) for f, _ in files]), [str(f) for f, _ in files],
                            [label for _, label in files])
    pairs = [(i, j) for i in range(len(PHOTOS)) for j in range(len(PHOTOS)) if i != j]
    x = quantize(photos[[i for i, _ in pairs]])
    refs = photos[[j for _, j in pairs]]
    for steps in (10, 40):
        res = feature_attack(probe, x, refs, steps=steps, seed=0)
        found = nearest(gallery, dp.embed(probe, res.images).detach(), 1)
        moved = sum(f.labels[0] == PHOTOS[j] for f, (_, j) in zip(found, pairs))
        print(f"toward, {steps} steps: cosine to the reference {res.cosine_before.mean():.3f} -> "
              f"{res.cosine_after.mean():.3f} (min {res.cosine_after.min():.3f}); nearest gallery view is the "
              f"reference's in {moved}/{len(pairs)}")
    res = feature_attack(probe, quantize(photos), away=True, steps=10, seed=0)
    found = nearest(gallery, dp.embed(probe, res.images).detach(), 1)
    kept = sum(f.labels[0] == p for f, p in zip(found, PHOTOS))
    print(f"away, 10 steps: cosine to the original {res.cosine_after.mean():.3f} (max {res.cosine_after.max():.3f});"
          f" nearest gallery view still the photo's own in {kept}/{len(PHOTOS)}")


def main() -> None:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        backbone = save_headless_lite0(tmp / "lite0_backbone.safetensors")
        gallery = make_gallery(tmp / "gallery")
        model = ["--model", "timm:tf_efficientnet_lite0", "--weights", backbone]
        out = tmp / "out"
        # a canvas that holds the cat and the coffee: which half resembles which photo
        probe = dp.load_model("timm:tf_efficientnet_lite0", weights=backbone, device="cpu")
        canvas = torch.full((1, 3, 224, 224), 0.5)
        for k, name in enumerate(("cat", "coffee")):
            photo = F.interpolate(probe.load_image(EXAMPLES / f"{name}.jpg"), size=(112, 112), mode="bilinear",
                                  antialias=True)
            canvas[..., 56:168, 112 * k:112 * (k + 1)] = photo
        save_png(canvas, tmp / "cat_and_coffee.png")
        heads = cli("explain", EXAMPLES / "cat.jpg", "--model", f"hf:{random_dinov2(tmp / 'dinov2')}",
                    "--method", "attention", "--out", out)
        similar = cli("explain", tmp / "cat_and_coffee.png", *model, "--reference", EXAMPLES / "coffee.jpg",
                      "--out", out)
        fooled = cli("fool", EXAMPLES / "cat.jpg", *model, "--reference", EXAMPLES / "coffee.jpg", "--gallery",
                     gallery, "--steps", "10", "--out", out)
        knn = cli("classify", EXAMPLES / "rocket.jpg", *model, "--gallery", gallery, "--top", "4", "--out", out)
        figures = [next(r["attention_heads"] for r in heads["results"] if "attention_heads" in r),
                   similar["results"][0]["methods"]["similarity"]["overlay"],
                   fooled["results"][0]["panel"], knn["results"][0]["output"]]
        tiles = [Image.open(f).convert("RGB") for f in figures]
        width = 900
        tiles = [t.resize((round(t.width * min(1, width / t.width)), round(t.height * min(1, width / t.width))),
                          Image.LANCZOS) for t in tiles]
        sheet = Image.new("RGB", (width, sum(t.height for t in tiles) + 10 * len(tiles)), "white")
        y = 0
        for t in tiles:
            sheet.paste(t, (0, y))
            y += t.height + 10
        sheet.save(ROOT / "docs" / "embedding_panel.jpg", quality=75)
        print("cosine of the canvas to the coffee:", similar["results"][0]["cosine"])
        print("fool:", {k: fooled["results"][0][k] for k in ("cosine_before", "cosine_after", "nearest_before",
                                                               "nearest_after", "knn_class_after", "success")})
        print("k-NN:", knn["results"][0]["top"])
        measure_attacks(backbone, gallery)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
