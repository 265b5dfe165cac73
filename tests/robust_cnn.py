"""An adversarially trained 32x32 CNN: the robust model the attack tests and benchmarks run on.

Every robustness figure of an undefended model says little about the attacks (the first steps break every
image); on a robust model most images survive, every attack of the cascade runs to its end, and only then does it
show whether the attacks are as strong as AutoAttack's. No robust weights are downloadable here, so this module
makes one: `draw(n, seed)` paints synthetic 32x32 scenes (one of five shapes, orange or blue, at a random contrast
on a noisy background: 10 classes), and `train()` fits `build()` by PGD adversarial training (Madry et al. 2018)
in about 3 minutes of one CPU core (175 s measured). The trained weights ship as `tests/fixtures/robust_cnn.pt`
(float16, 75 KiB), so every machine tests the same network:

    python tests/robust_cnn.py            # retrain and overwrite the fixture (prints clean / robust accuracy)
    deepprobe classify x.png --model python:tests.robust_cnn:build --weights tests/fixtures/robust_cnn.pt

The module declares `input_size`, `mean`, `std` and `labels`, the attributes a `python:` spec reads: deepprobe
resizes to 32 px and normalizes with them. In plain PyTorch, `load()` gives the network with the normalization in
front (it takes [0,1] images).

The images use only exact float arithmetic (no transcendental functions) and are rounded to 8 bits, so a seed
gives the same pixels on every CPU.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

input_size = 32
mean = (0.5, 0.5, 0.5)
std = (0.25, 0.25, 0.25)
SHAPES = ("square", "disk", "triangle", "cross", "ring")
COLORS = ("orange", "blue")
labels = [f"{color} {shape}" for shape in SHAPES for color in COLORS]  # class k: shape k // 2, colour k % 2
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "robust_cnn.pt"
TRAIN_EPS = 8 / 255  # the L-inf budget it is trained for (and the tests attack at)


class RobustCNN(nn.Module):
    """Four conv blocks and a linear head (~33k parameters); takes images normalized with `mean` and `std`."""

    def __init__(self, width: int = 16, classes: int = len(labels)):
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(block(3, width, 1), block(width, 2 * width, 2), block(2 * width, 2 * width, 1),
                                      block(2 * width, 4 * width, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


class Normalize(nn.Module):
    """(x - mean) / std in front of the network, for plain PyTorch use and training ([0,1] images in)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build() -> nn.Module:
    """The `python:tests.robust_cnn:build` factory (random weights; --weights FILE loads the fixture)."""
    net = RobustCNN()
    net.labels = list(labels)
    return net


def load(path: str | Path = FIXTURE) -> nn.Module:
    """The trained network (float32, eval mode) from the fixture, normalization in front: [0,1] images in."""
    net = build()
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return nn.Sequential(Normalize(), net).eval()


def _masks(kind: torch.Tensor, cx, cy, r, yy, xx) -> torch.Tensor:
    """(N,32,32) masks of each image's shape; only +, -, *, comparisons (the same bits on every CPU)."""
    dx, dy = xx - cx, yy - cy
    ax, ay = dx.abs(), dy.abs()
    d2, r2 = dx * dx + dy * dy, r * r
    shapes = torch.stack([
        (ax <= r) & (ay <= r),                                          # square
        d2 <= r2,                                                       # disk
        (dy <= r) & (2 * ax <= dy + r),                                 # triangle, apex up
        ((ax <= 0.35 * r) & (ay <= r)) | ((ay <= 0.35 * r) & (ax <= r)),  # cross
        (d2 <= r2) & (d2 >= 0.36 * r2),                                 # ring
    ], 1)
    return shapes[torch.arange(len(kind)), kind]


def draw(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n scenes (N,3,32,32) on the 8-bit grid in [0,1] and their classes (N,): a orange or blue shape whose contrast
    ranges from faint to strong (faint ones are the images an attack can break) on a textured background."""
    g = torch.Generator().manual_seed(seed)
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    y = torch.randint(0, len(labels), (n,), generator=g)
    shape, color = y // 2, y % 2
    s = input_size
    yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij")
    r = (5 + 5 * u(n)).view(n, 1, 1)
    cx, cy = (r + (s - 1 - 2 * r) * u(n, 1, 1)), (r + (s - 1 - 2 * r) * u(n, 1, 1))
    mask = _masks(shape, cx, cy, r, yy, xx).unsqueeze(1).float()
    # background: a grey level, a linear ramp and pixel noise
    base = 0.3 + 0.4 * u(n, 1, 1, 1)
    ramp = (u(n, 1, 1, 1) - 0.5) * 0.3 * (xx / s - 0.5) + (u(n, 1, 1, 1) - 0.5) * 0.3 * (yy / s - 0.5)
    background = base + ramp + 0.06 * (u(n, 3, s, s) - 0.5)
    # foreground: orange (+R -B) or blue (+B -R) at a contrast between 0.03 and 0.35, plus a brightness change
    contrast = (0.03 + 0.32 * u(n)).view(n, 1, 1, 1)
    sign = (1 - 2 * color.float()).view(n, 1, 1, 1)  # orange +1, blue -1
    tint = torch.cat([sign, torch.zeros_like(sign), -sign], 1) * contrast
    bright = (u(n, 1, 1, 1) - 0.5) * 0.2
    x = (background + mask * (tint + bright)).clamp(0, 1)
    return (x * 255).round() / 255, y


def pgd(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, g: torch.Generator) -> torch.Tensor:
    """L-inf PGD from a random start (the training attack)."""
    alpha = 2.5 * eps / steps
    adv = (x + eps * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(net(adv), y), adv)
        adv = torch.min(torch.max(adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return adv.detach()


def train(n: int = 6000, epochs: int = 8, eps: float = TRAIN_EPS, steps: int = 4, batch: int = 128,
          seed: int = 0, clean_epochs: int = 3) -> nn.Module:
    """PGD adversarial training: each batch is replaced by its PGD examples (eps ramped up over the first
    epochs), Adam with a one-cycle learning rate; `clean_epochs` of plain training first (a fast start)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = draw(n, seed=1000 + seed)
    net = build()
    model = nn.Sequential(Normalize(), net)  # trained on [0,1] images, as deepprobe feeds it
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    total = (clean_epochs + epochs) * ((n + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=total, pct_start=0.25)
    for epoch in range(-clean_epochs, epochs):
        ramp = min(1.0, (epoch + 1) / max(1, epochs // 3)) if epoch >= 0 else 0.0
        order = torch.randperm(n, generator=g)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            model.eval()
            adv = pgd(model, x[idx], y[idx], eps * ramp, steps, g) if ramp else x[idx]
            model.train()
            loss = F.cross_entropy(model(adv), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()  # without the normalization: what the fixture stores


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (net(x).argmax(1) == y).float().mean().item()


def main() -> None:
    torch.set_num_threads(1)
    start = time.perf_counter()
    net = train()
    took = time.perf_counter() - start
    state = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    FIXTURE.parent.mkdir(exist_ok=True)
    torch.save(state, FIXTURE)
    net = load()
    x, y = draw(500, seed=1)
    adv = pgd(net, x, y, TRAIN_EPS, 20, torch.Generator().manual_seed(0))
    print(f"trained in {took:.0f} s; {FIXTURE.name} {FIXTURE.stat().st_size / 1024:.0f} KiB; on 500 new scenes: clean "
          f"{accuracy(net, x, y):.1%}, PGD-20 at 8/255 {accuracy(net, adv, y):.1%}", file=sys.stderr)


if __name__ == "__main__":
    main()
