"""Regenerates swirls.jpg: contour bands of a smooth random field through blue-yellow and copper palettes.

Procedural (no source image), written for deepprobe and dedicated to the public domain (CC0).
Run: python examples/styles/make_swirls.py
"""
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

rng = np.random.default_rng(7)
n = 256
y, x = np.mgrid[0:n, 0:n] / n
field = np.zeros((n, n))
for _ in range(22):  # a smooth landscape of Gaussian bumps and pits
    cy, cx, s, a = rng.uniform(-0.1, 1.1), rng.uniform(-0.1, 1.1), rng.uniform(0.08, 0.22), rng.choice([-1, 1])
    field += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
field += 0.15 * np.sin(6 * x + 3 * y)
field = (field - field.min()) / (field.max() - field.min())
bands = 0.5 + 0.5 * np.sin(2 * np.pi * 12 * field)  # contour rings, dense where the field is steep
tone = 0.55 * bands + 0.45 * field
warm = 0.5 + 0.5 * np.sin(5 * x - 4 * y + 1.0) * np.cos(3 * y + 2 * x)  # where the palette turns warm
rgb = (1 - warm[..., None]) * colormaps["cividis"](tone)[..., :3] + warm[..., None] * colormaps["copper"](tone)[..., :3]
shade = 0.75 + 0.25 * bands[..., None]
out = Path(__file__).resolve().parent / "swirls.jpg"
Image.fromarray((rgb * shade * 255).clip(0, 255).astype(np.uint8)).save(out, quality=90)
