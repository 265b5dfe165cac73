"""Gallery embeddings kept between runs (deepprobe.gallery_cache): a second `classify --gallery` embeds nothing of
the gallery and votes the same; a changed image is embedded again and only it; other weights, a removed image, a
damaged cache file and DEEPPROBE_CACHE=off each do what they must."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageOps
from typer.testing import CliRunner

import deepprobe as dp
import deepprobe.models.embedding as embedding_module
from deepprobe.cli import app
from deepprobe.cli.gallery import read_gallery
from tiny_embedders import PHOTOS, make_gallery

SPEC = "python:tiny_embedders:vit"  # a tiny random ViT embedder: cheap, and its embeddings tell images apart


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("DEEPPROBE_CACHE", str(folder))
    return folder


@pytest.fixture()
def gallery(tmp_path) -> Path:
    return make_gallery(tmp_path / "gallery")


@pytest.fixture()
def embedded(monkeypatch) -> list[int]:
    """How many images go through the embedder, call by call (the gallery is embedded through this function)."""
    counts: list[int] = []
    real = embedding_module.embed

    def counting(bundle, x, *args, **kwargs):
        counts.append(int(x.shape[0]))
        return real(bundle, x, *args, **kwargs)

    monkeypatch.setattr(embedding_module, "embed", counting)
    return counts


class _Run:
    """What read_gallery needs of a CLI run."""

    def __init__(self):
        self.summary: dict = {}

    @contextlib.contextmanager
    def status(self, _text):
        yield


def images_in(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*.jpg"))


def test_a_second_classify_embeds_nothing_of_the_gallery_and_votes_the_same(cache, gallery, embedded, examples,
                                                                           tmp_path):
    def classify(out: str) -> dict:
        res = CliRunner().invoke(app, ["classify", str(examples / "cat.jpg"), str(examples / "coffee.jpg"),
                                       "--model", SPEC, "--gallery", str(gallery), "--out", str(tmp_path / out),
                                       "--json"])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    first = classify("one")  # the gallery, then the two photos
    assert embedded[-1] == 2 and sum(embedded) == images_in(gallery) + 2 and first["gallery_cached"] == 0
    assert len(list((cache / "galleries").glob("*.pt"))) == 1
    embedded.clear()
    second = classify("two")
    assert embedded == [2] and second["gallery_cached"] == images_in(gallery)  # the photos only
    strip = lambda s: [{k: v for k, v in r.items() if k != "output"} for r in s["results"]]  # noqa: E731
    assert strip(second) == strip(first)


def test_a_changed_image_is_embedded_again_and_only_it(cache, gallery, embedded):
    bundle = dp.load_model(SPEC, device="cpu")
    before = read_gallery(_Run(), bundle, str(gallery))
    changed = gallery / PHOTOS[0] / f"{PHOTOS[0]}_mirror.jpg"
    ImageOps.flip(Image.open(changed)).save(changed)  # new content (and size, mtime)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    embedded.clear()
    run = _Run()
    after = read_gallery(run, bundle, str(gallery))
    assert embedded == [1] and run.summary["gallery_cached"] == images_in(gallery) - 1
    k = after.names.index(str(changed))
    fresh = embedding_module.embed(bundle, bundle.load_image(changed))[0]
    assert torch.allclose(after.embeddings[k], fresh, atol=1e-5)
    assert not torch.allclose(before.embeddings[k], fresh, atol=1e-3)  # the cache did not serve the old image
    others = [i for i in range(len(after)) if i != k]
    assert torch.equal(after.embeddings[others], before.embeddings[others])


def test_other_weights_miss_the_cache_and_both_are_kept(cache, gallery, embedded):
    bundle = dp.load_model(SPEC, device="cpu")
    read_gallery(_Run(), bundle, str(gallery))
    with torch.no_grad():
        next(bundle.inner.parameters()).add_(0.01)  # the same spec with other weights
    embedded.clear()
    read_gallery(_Run(), bundle, str(gallery))
    assert sum(embedded) == images_in(gallery)
    assert len(list((cache / "galleries").glob("*.pt"))) == 2
    embedded.clear()
    read_gallery(_Run(), dp.load_model(SPEC, device="cpu"), str(gallery))  # the original weights again: a hit
    assert sum(embedded) == 0


def test_removed_images_leave_the_cache_and_random_weights_are_never_cached(cache, gallery, embedded):
    bundle = dp.load_model(SPEC, device="cpu")
    read_gallery(_Run(), bundle, str(gallery))
    shutil.rmtree(gallery / PHOTOS[-1])
    left = read_gallery(_Run(), bundle, str(gallery))
    (file,) = (cache / "galleries").glob("*.pt")
    stored = torch.load(file, weights_only=True)
    assert len(stored["paths"]) == len(left) == images_in(gallery) and PHOTOS[-1] not in left.labels
    bundle.random_init = True
    embedded.clear()
    read_gallery(_Run(), bundle, str(gallery))
    read_gallery(_Run(), bundle, str(gallery))
    assert sum(embedded) == 2 * images_in(gallery)


def test_a_damaged_cache_file_is_replaced_and_off_writes_nothing(cache, gallery, embedded, monkeypatch, capsys):
    bundle = dp.load_model(SPEC, device="cpu")
    first = read_gallery(_Run(), bundle, str(gallery))
    (file,) = (cache / "galleries").glob("*.pt")
    file.write_bytes(b"not a torch file")
    embedded.clear()
    again = read_gallery(_Run(), bundle, str(gallery))
    assert sum(embedded) == images_in(gallery) and torch.allclose(again.embeddings, first.embeddings, atol=1e-6)
    assert "ignoring the unreadable gallery cache" in capsys.readouterr().err
    assert torch.load(file, weights_only=True)["version"] == 1  # replaced by a good one
    off = cache.parent / "off-cache"
    monkeypatch.setenv("DEEPPROBE_CACHE", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(off))
    embedded.clear()
    read_gallery(_Run(), bundle, str(gallery))
    read_gallery(_Run(), bundle, str(gallery))
    assert sum(embedded) == 2 * images_in(gallery) and not off.exists()
