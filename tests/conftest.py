"""Shared fixtures: the bundled model is loaded once per test session; photos come from examples/; `attempts`
blocks the network and records every connection attempt."""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

# tests/ is a package (robustbench installs a top-level `tests` into site-packages, which would shadow a folder
# without __init__.py), so pytest puts the repository root on sys.path; test modules also import their helpers by
# bare name (`from tiny32 import ...`, `python:tiny_foundation:...`), so the folder itself goes there too.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The suite runs as `pytest -n auto` (one worker per core): one torch thread per worker. Several workers with
    # several threads each oversubscribe the cores, and OpenMP's spinning threads then run ~10x slower.
    os.environ["OMP_NUM_THREADS"] = "1"  # also for the CLI subprocesses the tests start
    import torch

    torch.set_num_threads(1)

# deepprobe's own cache (gallery embeddings) goes to a folder of this session, never the user's ~/.cache
_CACHE = tempfile.mkdtemp(prefix="deepprobe-cache-")
os.environ["DEEPPROBE_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` skip, with the reason, on a machine without a CUDA GPU."""
    needs_gpu = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not needs_gpu:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs these)")
    for item in needs_gpu:
        item.add_marker(skip)


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
def class_tree(tmp_path_factory) -> Path:
    """A small labelled data set: class folders named by class name, index and WordNet id, and one file that is
    not an image. Labels: coffee espresso (967), cat tiger cat (282, the model says Egyptian cat), cat Egyptian
    cat (n02124075 = 285), motorcycle moped (665)."""
    root = tmp_path_factory.mktemp("class_tree")
    for folder, photo in (("espresso", "coffee"), ("282", "cat"), ("n02124075", "cat"), ("moped", "motorcycle")):
        (root / folder).mkdir()
        shutil.copy(EXAMPLES / f"{photo}.jpg", root / folder / f"{photo}.jpg")
    (root / "moped" / "broken.jpg").write_text("not a jpeg")
    return root


@pytest.fixture(scope="session")
def tiny_tasks():
    """(detector.pth, segmenter.pth): the tiny shape detector and segmenter of tests/tiny_tasks.py, trained once and
    shipped in tests/fixtures/ (training converges differently on CPUs with other floating-point kernels, so no
    test trains them; `python -m tests.tiny_tasks` remakes the files)."""
    import sys

    root = str(EXAMPLES.parent)
    if root not in sys.path:  # `python:tests.tiny_tasks:...` specs import from the repository root
        sys.path.insert(0, root)
    from tests.tiny_tasks import DETECTOR_WEIGHTS, SEGMENTER_WEIGHTS

    return DETECTOR_WEIGHTS, SEGMENTER_WEIGHTS


@pytest.fixture
def attempts(monkeypatch) -> list[str]:
    """Block every network connection (Unix sockets stay allowed) and record each attempt."""
    seen: list[str] = []
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(what: str):
        seen.append(what)
        raise OSError(f"network access blocked in tests: {what}")

    def guarded(original):
        def method(sock, address, *args):
            if sock.family == getattr(socket, "AF_UNIX", None):
                return original(sock, address, *args)
            return refuse(f"connect {address!r}")
        return method

    monkeypatch.setattr(socket.socket, "connect", guarded(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(connect_ex))
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: refuse(f"getaddrinfo {host!r}"))
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(f"create_connection {address!r}"))
    return seen
