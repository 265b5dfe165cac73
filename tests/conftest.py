"""Shared fixtures: the bundled model is loaded once per test session; photos come from examples/."""
from __future__ import annotations

from pathlib import Path

import pytest

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
