"""Shared fixtures: the bundled model is loaded once per test session; photos come from examples/."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The suite runs as `pytest -n auto` (one worker per core): one torch thread per worker. Several workers with
    # several threads each oversubscribe the cores, and OpenMP's spinning threads then run ~10x slower.
    os.environ["OMP_NUM_THREADS"] = "1"  # also for the CLI subprocesses the tests start
    import torch

    torch.set_num_threads(1)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="session")
def examples() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def lite0():
    import deepprobe as dp

    return dp.load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def cat(lite0):
    return lite0.load_image(EXAMPLES / "cat.jpg")


@pytest.fixture(scope="session")
def coffee(lite0):
    return lite0.load_image(EXAMPLES / "coffee.jpg")


@pytest.fixture(scope="session")
def tiny_tasks(tmp_path_factory):
    """(detector.pth, segmenter.pth): the tiny shape detector and segmenter of tests/tiny_tasks.py, trained once
    per session (a few seconds; the pytest-xdist workers share one copy through a file lock)."""
    import sys

    from filelock import FileLock

    root = str(EXAMPLES.parent)
    if root not in sys.path:  # `python:tests.tiny_tasks:...` specs import from the repository root
        sys.path.insert(0, root)
    from tests import tiny_tasks

    import hashlib

    version = hashlib.sha256(Path(tiny_tasks.__file__).read_bytes()).hexdigest()[:12]  # new code, new weights
    shared = tmp_path_factory.getbasetemp().parent / f"tiny_tasks_{version}"
    shared.mkdir(exist_ok=True)
    with FileLock(str(shared / "train.lock")):
        det, seg = shared / "tiny_detector.pth", shared / "tiny_segmenter.pth"
        if not (det.is_file() and seg.is_file()):
            tiny_tasks.save_trained(shared)
    return det, seg
