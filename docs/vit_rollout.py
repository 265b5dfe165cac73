"""Make docs/vit_rollout.jpg: rollout, Chefer and the last layer's heads on a tiny ViT trained on the spot.

No ViT weights exist offline, so this trains the test suite's synthetic task (which quadrant of a noise image
holds a bright square) at 64 px with 8 px patches, then explains three held-out images:
input | rollout | chefer | CLS attention of each head of the last layer.

    python docs/vit_rollout.py          # about a minute on 2 CPU cores
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_explain_vit import QUADRANTS, quadrant_images, train_tiny_vit, vit_bundle  # noqa: E402

from deepprobe.explain import explain  # noqa: E402
from deepprobe.explain.transformer import attention_heads  # noqa: E402
from deepprobe.render import grid, overlay  # noqa: E402

SIZE = 64


def main() -> None:
    torch.set_num_threads(1)
    bundle = vit_bundle(train_tiny_vit(steps=400, size=SIZE, depth=3, embed_dim=48), spec="tiny ViT", size=SIZE)
    x, y, _ = quadrant_images(256, seed=11, size=SIZE)
    accuracy = (bundle.predict(x).argmax(1) == y).float().mean().item()
    print(f"held-out accuracy {accuracy:.3f}")
    x, y = x[:3], y[:3]
    probs = bundle.predict(x)
    maps = {"rollout": explain(bundle, x, "rollout"), "chefer": explain(bundle, x, "chefer")}
    heads = attention_heads(bundle, x)
    tiles, captions = [], []
    for i in range(len(x)):
        pred = int(probs[i].argmax())
        tiles.append(x[i])
        captions.append(f"{QUADRANTS[pred]} {probs[i, pred]:.0%}")
        for name, m in maps.items():
            tiles.append(overlay(x[i], m[i].numpy(), alpha=0.55))
            captions.append(name)
        for h in range(heads.shape[1]):
            tiles.append(overlay(x[i], heads[i, h].numpy(), alpha=0.55))
            captions.append(f"last layer, head {h}")
    figure = grid(tiles, captions, columns=3 + heads.shape[1], cell=128,
                  title=f"tiny ViT ({SIZE} px, 8 px patches, 3 blocks) on 'which quadrant holds the square'")
    out = ROOT / "docs" / "vit_rollout.jpg"
    figure.save(out, quality=85)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB), {figure.size}")


if __name__ == "__main__":
    main()
