"""`cifar10:ROOT` / `cifar100:ROOT`: the test set read from torchvision's on-disk files, which the tests write.

The folders hold pickles in torchvision's format (a dict with a (N, 3072) uint8 array and the labels), so
torchvision's own CIFAR10 class reads them too; the order must be RobustBench's `load_cifar10` (the first N of the
test set), and the reader must refuse a pickle that would build anything but arrays.
"""
from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from deepprobe.cli import app
from deepprobe.data import open_dataset, select
from deepprobe.errors import DeepprobeError
from deepprobe.models.labels import CIFAR10_LABELS, CIFAR100_LABELS

runner = CliRunner()


def write_cifar(root: Path, n: int = 40, kind: str = "cifar10", seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """A CIFAR test set of n random images in torchvision's files under root; returns (N,3,32,32) uint8 and labels.
    Image i is brightest in channel i % 3 and has a block at a position given by i, so an order mix-up shows."""
    rng = np.random.default_rng(seed)
    classes = 10 if kind == "cifar10" else 100
    images = rng.integers(0, 200, (n, 3, 32, 32), dtype=np.uint8)
    for i in range(n):
        images[i, i % 3] = np.maximum(images[i, i % 3], 220)
        images[i, :, i % 32, :] = 7
    labels = rng.integers(0, classes, n).tolist()
    if kind == "cifar10":
        folder, test, key, meta, names = "cifar-10-batches-py", "test_batch", "labels", "batches.meta", "label_names"
        labels_names = CIFAR10_LABELS
    else:
        folder, test, key, meta, names = "cifar-100-python", "test", "fine_labels", "meta", "fine_label_names"
        labels_names = CIFAR100_LABELS
    (root / folder).mkdir(parents=True, exist_ok=True)
    entry = {"batch_label": "testing batch 1 of 1", key: labels, "data": images.reshape(n, -1),
             "filenames": [f"img_{i}.png" for i in range(n)]}
    if kind == "cifar100":
        entry["coarse_labels"] = [v // 5 for v in labels]
    with open(root / folder / test, "wb") as f:
        pickle.dump(entry, f)
    with open(root / folder / meta, "wb") as f:
        pickle.dump({names: list(labels_names)}, f)
    return images, labels


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_reads_torchvisions_files_in_order(tmp_path, kind, monkeypatch):
    images, labels = write_cifar(tmp_path, n=30, kind=kind)
    classes = 10 if kind == "cifar10" else 100
    dataset = select(open_dataset(f"{kind}:{tmp_path}", None, classes), limit=12)
    assert [item.index for item in dataset.items] == list(range(12))
    assert [item.label for item in dataset.items] == labels[:12]
    assert dataset.total == 30 and dataset.describe()["kind"] == kind
    ours = torch.cat([dataset.tensors[i:i + 1] for i in range(12)])
    assert torch.equal(ours, torch.from_numpy(images[:12]).float() / 255)
    # torchvision reads the same files the same way (its checksums are those of the real download: skip them)
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    reference = (tv_cifar.CIFAR10 if kind == "cifar10" else tv_cifar.CIFAR100)(str(tmp_path), train=False)
    assert reference.targets[:12] == labels[:12]
    assert np.array_equal(reference.data[:12], images[:12].transpose(0, 2, 3, 1))
    # ROOT may also be torchvision's folder itself; a different test set gives a different fingerprint
    inner = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert open_dataset(f"{kind}:{inner}", None, classes).fingerprint() == open_dataset(
        f"{kind}:{tmp_path}", None, classes).fingerprint()
    full = open_dataset(f"{kind}:{tmp_path}", None, classes).fingerprint()
    pickled = next(p for p in inner.iterdir() if p.name in ("test_batch", "test"))
    entry = pickle.loads(pickled.read_bytes())
    entry["data"][0, 0] ^= 1  # one pixel of one image changes: the same labels, another data set
    pickled.write_bytes(pickle.dumps(entry))
    assert open_dataset(f"{kind}:{tmp_path}", None, classes).fingerprint() != full


@pytest.mark.skipif(importlib.util.find_spec("robustbench") is None, reason="pip install 'deepprobe[robustbench]'")
def test_first_n_is_robustbenchs_order(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    from deepprobe.models.robustbench import model_zoo

    model_zoo()  # makes `robustbench.*` importable without the package's top level (it imports autoattack)
    from robustbench.data import load_cifar10

    write_cifar(tmp_path, n=150)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(tv_cifar.CIFAR10, "download", lambda self: None)  # RobustBench asks for download=True
    x, y = load_cifar10(n_examples=120, data_dir=str(tmp_path))
    dataset = select(open_dataset(f"cifar10:{tmp_path}", None, 10), limit=120)
    ours = torch.cat([dataset.tensors[item.index:item.index + 1] for item in dataset.items])
    assert torch.equal(ours, x)
    assert [item.label for item in dataset.items] == y.tolist()


def test_cifar_errors_are_one_line(tmp_path):
    with pytest.raises(DeepprobeError, match=r"no CIFAR10 test set at .*cifar-10-batches-py/test_batch.*"
                                             r"data_batch_1\.\.data_batch_5, test_batch, batches\.meta.*never downloads"):
        open_dataset(f"cifar10:{tmp_path}", None, 10)
    with pytest.raises(DeepprobeError, match=r"cifar-100-python/test .*train, test, meta"):
        open_dataset(f"cifar100:{tmp_path}", None, 100)
    write_cifar(tmp_path, n=5)
    with pytest.raises(DeepprobeError, match="cifar10 has 10 classes but m has 1000"):
        open_dataset(f"cifar10:{tmp_path}", None, 1000, "m")
    with pytest.raises(DeepprobeError, match="stands alone"):
        open_dataset([f"cifar10:{tmp_path}", "examples/cat.jpg"], None, 10)
    # a pickle that would run code when loaded is refused, and nothing runs
    evil = tmp_path / "evil"
    (evil / "cifar-10-batches-py").mkdir(parents=True)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    with open(evil / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Payload(), "labels": [0]}, f)
    with pytest.raises(DeepprobeError, match="not a CIFAR10 batch in torchvision's format.*refusing to build"):
        open_dataset(f"cifar10:{evil}", None, 10)
    assert not marker.exists()


def test_cifar_robustness_cli_first_n(tmp_path, monkeypatch):
    """`deepprobe robustness cifar10:ROOT --limit N` measures the first N test images with their labels."""
    import deepprobe as dp
    from tests import robust_cnn

    data = tmp_path / "data"
    images, labels = write_cifar(data, n=20)
    probe = dp.load_model("python:tests.robust_cnn:build", weights=robust_cnn.FIXTURE, device="cpu")
    assert probe.input_size == (32, 32)  # the module's declaration: CIFAR images go in as they are
    predicted = probe.predict(torch.from_numpy(images[:6]).float() / 255).argmax(1).tolist()
    out = tmp_path / "run"
    # `~` inside cifar10:~/... is not expanded by the shell: deepprobe expands it
    monkeypatch.setenv("HOME", str(tmp_path))
    res = runner.invoke(app, ["robustness", "cifar10:~/data", "--model", "python:tests.robust_cnn:build",
                              "--weights", str(robust_cnn.FIXTURE), "--input-size", "32", "--limit", "6", "--attack", "fgsm",
                              "--eps", "1/255", "--workers", "0", "--batch-size", "4", "--out", str(out), "--json",
                              "--quiet"])
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(6))
    assert [r["label"] for r in records] == labels[:6]
    assert [r["clean_pred"] for r in records] == predicted
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 6 and summary["labels"] == "test-set labels"
    assert summary["clean_accuracy"] == pytest.approx(sum(p == t for p, t in zip(predicted, labels)) / 6, abs=1e-6)
