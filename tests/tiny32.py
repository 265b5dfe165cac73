"""A 32x32 classifier as users bring one: `--model python:tests.tiny32:build --weights tests/fixtures/quadrants32.pt`.

The task is where a bright square sits (which quadrant), so behaviour can be checked: a Grad-CAM map must land on
the square, a fooled image must re-classify as its target. The shipped weights (6k parameters, ~27 KB) were
trained by `python -m tests.tiny32` on the images `quadrant_images` draws; every CPU tests the same network.
The module declares what deepprobe reads from a python: factory's module: input_size, mean, std, labels.
`grey` is the same idea for one-channel (MNIST-style) input, untrained.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "quadrants32.pt"
input_size = 32
mean = (0.25, 0.25, 0.25)
std = (0.25, 0.25, 0.25)
labels = ["top left", "top right", "bottom left", "bottom right"]


def build(channels: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, len(labels)))


def grey() -> nn.Module:
    torch.manual_seed(0)
    return build(channels=1)


def quadrant_images(n: int, seed: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,3,size,size) in [0,1]: dim noise with one bright square (random colour, 8-12 px) in a random quadrant,
    and the quadrant's index (0 top left, 1 top right, 2 bottom left, 3 bottom right)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=gen) * 0.4
    y = torch.randint(0, 4, (n,), generator=gen)
    half = size // 2
    for i in range(n):
        side = int(torch.randint(8, 13, (1,), generator=gen))
        top = int(torch.randint(0, half - side + 1, (1,), generator=gen)) + half * int(y[i] // 2)
        left = int(torch.randint(0, half - side + 1, (1,), generator=gen)) + half * int(y[i] % 2)
        colour = 0.6 + 0.4 * torch.rand(3, 1, 1, generator=gen)
        x[i, :, top:top + side, left:left + side] = colour
    return x, y


def train(steps: int = 2000, seed: int = 0) -> nn.Module:
    """The fixture's training (CPU, about a minute): Adam on fresh synthetic batches, with the module's normalization."""
    torch.manual_seed(seed)
    net = build()
    norm_mean, norm_std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for step in range(steps):
        x, y = quadrant_images(64, seed=1 + step)
        loss = nn.functional.cross_entropy(net((x - norm_mean) / norm_std), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


if __name__ == "__main__":
    model = train()
    x, y = quadrant_images(512, seed=10_000)
    with torch.no_grad():
        accuracy = (model((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
                    .argmax(1) == y).float().mean()
    FIXTURE.parent.mkdir(exist_ok=True)
    torch.save(model.state_dict(), FIXTURE)
    print(f"held-out accuracy {accuracy:.3f}; saved {FIXTURE} ({FIXTURE.stat().st_size} bytes)")
