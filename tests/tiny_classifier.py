"""A tiny untrained CNN classifier, the same on every run and CPU (weights drawn from a fixed seed), for tests whose
subject is the machinery around a model (processes, ranks, batching) rather than what the model knows.

    deepprobe robustness DATA --model python:tests.tiny_classifier:build ...

An attack step costs a few milliseconds at 224 px, so a test can afford hundreds of them across processes.
"""
from __future__ import annotations

import torch
from torch import nn

CLASSES = 10


def build() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 8, stride=8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, CLASSES))
    net.labels = [f"class{k}" for k in range(CLASSES)]
    return net
