"""The streaming data layer on real photos: DATA forms and their labels, subsets, the resumable run folder.

The per-batch function in these tests is the bundled model's prediction, so records hold real outputs; an
interruption is a KeyboardInterrupt raised inside the second chunk, and a crash mid-write is a half line.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from deepprobe.data import from_tensors, item_seed, open_dataset, run_dataset, select, wilson
from deepprobe.data.runner import Hooks
from deepprobe.data.store import RunFolder
from deepprobe.errors import DeepprobeError

ESPRESSO, TIGER_CAT, MOPED, EGYPTIAN_CAT = 967, 282, 665, 285


@pytest.fixture(scope="module")
def tree(class_tree):
    return class_tree


def _labels(dataset):
    return {f"{Path(i.path).parent.name}/{Path(i.path).name}": i.label for i in dataset.items}


def test_folder_tree_maps_names_indices_and_wordnet_ids(tree, lite0):
    dataset = open_dataset(tree, lite0.labels, lite0.num_classes, lite0.spec)
    assert dataset.kind == "folder tree" and dataset.labeling == "class folders"
    assert _labels(dataset) == {"282/cat.jpg": TIGER_CAT, "espresso/coffee.jpg": ESPRESSO,
                                "moped/broken.jpg": MOPED, "moped/motorcycle.jpg": MOPED,
                                "n02124075/cat.jpg": EGYPTIAN_CAT}
    assert [item.index for item in dataset.items] == list(range(5))  # sorted folders, then files


def test_unknown_class_folders_are_listed_in_one_error(tmp_path, examples, lite0):
    for name in ("espresso", "ostrch", "n99999999", "1000"):
        (tmp_path / name).mkdir()
        shutil.copy(examples / "coffee.jpg", tmp_path / name / "x.jpg")
    with pytest.raises(DeepprobeError) as err:
        open_dataset(tmp_path, lite0.labels, lite0.num_classes, lite0.spec)
    message = str(err.value)
    assert "3 class folder" in message and "'ostrch' (did you mean 'ostrich'?)" in message
    assert "'n99999999'" in message and "'1000'" in message and "espresso" not in message.split(":")[1]
    assert "\n" not in message


def test_flat_folder_glob_and_files_use_predictions(examples, lite0):
    for data in (examples, str(examples / "*.jpg"), [str(examples / "cat.jpg"), str(examples / "coffee.jpg")]):
        dataset = open_dataset(data, lite0.labels, lite0.num_classes)
        assert dataset.labeling == "predictions" and all(item.label is None for item in dataset.items)
    dataset = open_dataset(examples, lite0.labels, lite0.num_classes)
    assert len(dataset.items) == 5 and dataset.kind == "flat"  # images of its own: flat, styles/ is ignored
    assert any("subfolder" in note for note in dataset.notes)


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_manifests_resolve_paths_and_labels(tmp_path, examples, lite0, suffix):
    (tmp_path / "img").mkdir()
    for photo in ("cat", "coffee"):
        shutil.copy(examples / f"{photo}.jpg", tmp_path / "img" / f"{photo}.jpg")
    rows = [("img/cat.jpg", "n02124075"), ("img/coffee.jpg", "espresso"), ("img/cat.jpg", "282")]
    manifest = tmp_path / f"list.{suffix}"
    if suffix == "csv":
        manifest.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    else:
        manifest.write_text("".join(json.dumps({"path": p, "label": label}) + "\n" for p, label in rows))
    dataset = open_dataset(manifest, lite0.labels, lite0.num_classes)
    assert dataset.labeling == "manifest"
    assert [item.label for item in dataset.items] == [EGYPTIAN_CAT, ESPRESSO, TIGER_CAT]
    assert all((tmp_path / "img").samefile(Path(item.path).parent) for item in dataset.items)


@pytest.mark.parametrize("write,words", [
    (lambda p: p.write_text("file,label\na.jpg,1\n"), "`path` column"),
    (lambda p: p.write_text("path,label\n"), "lists no images"),
    (lambda p: p.write_text("path,label\na.jpg,espresso\nb.jpg,\n"), "entry 2 has no label"),
    (lambda p: p.write_text("path,label\na.jpg,espreso\n"), "did you mean 'espresso'"),
])
def test_bad_manifests_get_one_clear_line(tmp_path, lite0, write, words):
    manifest = tmp_path / "m.csv"
    write(manifest)
    with pytest.raises(DeepprobeError, match=words):
        open_dataset(manifest, lite0.labels, lite0.num_classes)


def test_bad_jsonl_line_and_empty_folder(tmp_path, lite0):
    (tmp_path / "m.jsonl").write_text('{"path": "a.jpg", "label": 1}\nnot json\n')
    with pytest.raises(DeepprobeError, match="line 2: not valid JSON"):
        open_dataset(tmp_path / "m.jsonl", lite0.labels, lite0.num_classes)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeepprobeError, match="contains no images"):
        open_dataset(tmp_path / "empty", lite0.labels, lite0.num_classes)


def test_sample_is_a_fixed_subset_that_keeps_indices(tree, lite0):
    dataset = open_dataset(tree, lite0.labels, lite0.num_classes)
    a, b = select(dataset, sample=3, seed=7), select(dataset, sample=3, seed=7)
    assert [i.index for i in a.items] == [i.index for i in b.items] and len(a.items) == 3
    assert sorted(i.index for i in a.items) == [i.index for i in a.items]  # kept in data order
    others = {tuple(i.index for i in select(dataset, sample=3, seed=s).items) for s in range(8)}
    assert len(others) > 1  # the seed matters
    assert [i.index for i in select(dataset, limit=2).items] == [0, 1]
    assert a.fingerprint() != dataset.fingerprint() and a.fingerprint() == b.fingerprint()


def _predict(bundle, calls=None, stop_at=None):
    def process(batch):
        if calls is not None:
            calls.append(batch.chunk)
            if stop_at is not None and len(calls) == stop_at:
                raise KeyboardInterrupt
        top = bundle.predict(batch.images).argmax(1).tolist()
        return [{"pred": p, "seed": s} for p, s in zip(top, batch.seeds)]
    return process


def test_run_folder_resumes_after_an_interruption_with_the_same_records(tree, lite0, tmp_path):
    dataset = open_dataset(tree, lite0.labels, lite0.num_classes)
    kw = dict(batch_size=2, seed=3, config={"run": 1}, preprocess=lite0.preprocess)
    skipped = []
    whole = run_dataset(dataset, _predict(lite0), out=tmp_path / "whole", workers=2,
                        hooks=Hooks(skip=lambda item, reason: skipped.append((item.path, reason))), **kw)
    reference = list(whole.records())
    assert whole.complete and whole.count == 4 and [s["path"] for s in whole.skipped] == [skipped[0][0]]
    assert "broken.jpg" in skipped[0][0] and "not an image" in skipped[0][1]
    assert [r["index"] for r in reference] == [0, 1, 3, 4]
    assert {r["pred"] for r in reference if "coffee" in r["path"]} == {ESPRESSO}
    assert [r["seed"] for r in reference] == [item_seed(3, i) for i in (0, 1, 3, 4)]

    calls = []
    first = run_dataset(dataset, _predict(lite0, calls, stop_at=2), out=tmp_path / "cut", **kw)
    assert not first.complete and first.count == 2 and calls == [0, 1]
    with open(tmp_path / "cut" / "parts" / "rank0.jsonl", "a") as part:
        part.write('{"chunk": 1, "rank": 0, "records": [{"index"')  # a crash in the middle of a write
    calls = []
    again = run_dataset(dataset, _predict(lite0, calls), out=tmp_path / "cut", **kw)
    assert calls == [1, 2] and again.done_before == 2 and again.processed == 2
    assert list(again.records()) == reference
    assert json.loads((tmp_path / "cut" / "results.jsonl").read_text().splitlines()[-1])["index"] == 4
    calls = []
    third = run_dataset(dataset, _predict(lite0, calls), out=tmp_path / "cut", **kw)
    assert calls == [] and third.processed == 0 and list(third.records()) == reference  # each image once


def test_run_folder_refuses_another_configuration_unless_forced(tree, lite0, tmp_path):
    dataset = select(open_dataset(tree, lite0.labels, lite0.num_classes), limit=2)
    kw = dict(batch_size=2, preprocess=lite0.preprocess, out=tmp_path)
    run_dataset(dataset, _predict(lite0), config={"eps": [0.1]}, **kw)
    with pytest.raises(DeepprobeError, match=r"another configuration \(eps: \[0.1\] there, \[0.2\] now\)"):
        run_dataset(dataset, _predict(lite0), config={"eps": [0.2]}, **kw)
    (tmp_path / "examples").mkdir()
    calls = []
    run_dataset(dataset, _predict(lite0, calls), config={"eps": [0.2]}, force=True, also_remove=("examples",), **kw)
    assert calls == [0] and not (tmp_path / "examples").exists()
    assert json.loads((tmp_path / "config.json").read_text())["config"] == {"eps": [0.2]}
    (tmp_path / "config.json").unlink()
    with pytest.raises(DeepprobeError, match="no config.json"):
        run_dataset(dataset, _predict(lite0), config={"eps": [0.2]}, **kw)


def test_torn_tail_is_trimmed_before_appending(tmp_path):
    folder = RunFolder(tmp_path)
    folder.append(0, [{"index": 0}], [])
    with open(folder.part, "ab") as part:
        part.write(b'{"chunk": 1, "rec')
    folder = RunFolder(tmp_path)
    assert set(folder.done()) == {0}
    folder.append(1, [{"index": 1}], [])
    assert set(folder.done()) == {0, 1} and folder.write_results()[0] == 2


def test_tensors_in_memory(cat, coffee, lite0):
    import torch

    x = torch.cat([cat, coffee])
    dataset = from_tensors(x, torch.tensor([TIGER_CAT, ESPRESSO]))
    outcome = run_dataset(dataset, _predict(lite0), batch_size=1)
    assert [r["label"] for r in outcome.records()] == [TIGER_CAT, ESPRESSO]
    assert [r["pred"] for r in outcome.records()][1] == ESPRESSO


def test_wilson_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for k, n in ((0, 5), (3, 5), (5, 5), (412, 5000)):
        ours = wilson(k, n)
        theirs = scipy_stats.binomtest(k, n).proportion_ci(method="wilson")
        assert ours == pytest.approx((theirs.low, theirs.high), abs=1e-12)


# ----- pools: units of several chunks ------------------------------------------------------------------------
class _Pooled:
    """A per-unit function over lists of batches: records each call's chunk ids, one number per image (its mean
    pixel and seed: the same whatever unit the image is in), and a count per unit for the stats hook."""

    def __init__(self, stop_at: int | None = None):
        self.calls: list[list[int]] = []
        self.stop_at = stop_at
        self.units = 0

    def __call__(self, batches):
        self.calls.append([b.chunk for b in batches])
        if self.stop_at is not None and len(self.calls) == self.stop_at:
            raise KeyboardInterrupt
        self.units += 1
        return [[{"mean": round(float(im.mean()), 6), "seed": s} for im, s in zip(b.images, b.seeds)]
                for b in batches]

    def stats(self) -> dict:
        units, self.units = self.units, 0
        return {"calls": {"units": units}}


def _tensors():
    import torch

    return from_tensors(torch.rand(7, 3, 8, 8, generator=torch.Generator().manual_seed(0)))


def _part_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "parts" / "rank0.jsonl").read_text().splitlines()]


def test_a_pool_gets_its_batches_together_and_keeps_per_image_records(tmp_path):
    one = run_dataset(_tensors(), lambda b: [{"mean": round(float(im.mean()), 6), "seed": s}
                                             for im, s in zip(b.images, b.seeds)], batch_size=2, seed=1)
    pooled = _Pooled()
    kw = dict(batch_size=2, seed=1, config={"run": 1}, hooks=Hooks(stats=pooled.stats))
    outcome = run_dataset(_tensors(), pooled, out=tmp_path / "run", pool=3, **kw)
    assert pooled.calls == [[0, 1, 2], [3]]  # 4 chunks (2, 2, 2, 1 images) in units of 3
    assert list(outcome.records()) == list(one.records())
    assert outcome.stats == {"calls": {"units": 2}} and outcome.pool == 3
    lines = _part_lines(tmp_path / "run")
    assert [line["chunk"] for line in lines] == [0, 1, 2, 3]  # one line per chunk, stats on a unit's first
    assert ["stats" in line for line in lines] == [True, False, False, True]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"] == {"run": 1, "pool": 3}
    with pytest.raises(DeepprobeError, match=r"another configuration \(pool: 3 there, 2 now\)"):
        run_dataset(_tensors(), _Pooled(), out=tmp_path / "run", pool=2, **kw)


def test_a_crash_loses_at_most_the_unit_in_flight_and_a_torn_unit_is_run_again_whole(tmp_path):
    kw = dict(batch_size=2, seed=1, config={"run": 1}, pool=3)
    reference = list(run_dataset(_tensors(), _Pooled(), out=tmp_path / "whole", **kw).records())
    cut = _Pooled(stop_at=2)  # Ctrl-C during the second unit
    first = run_dataset(_tensors(), cut, out=tmp_path / "cut", **kw)
    assert not first.complete and first.count == 6 and [line["chunk"] for line in _part_lines(tmp_path / "cut")] == [0, 1, 2]
    part = tmp_path / "cut" / "parts" / "rank0.jsonl"
    text = part.read_text().splitlines(keepends=True)
    part.write_text("".join(text[:2]) + text[2][:30])  # the unit's last line torn: the unit is not done
    again = _Pooled()
    resumed = run_dataset(_tensors(), again, out=tmp_path / "cut", **kw)
    assert again.calls == [[0, 1, 2], [3]] and resumed.done_before == 4
    assert list(resumed.records()) == reference  # chunks 0 and 1 counted once (their first lines win)
    assert run_dataset(_tensors(), _Pooled(), out=tmp_path / "cut", **kw).processed == 0


def test_a_folder_from_before_pools_resumes_one_batch_at_a_time(tmp_path):
    from deepprobe.data.store import RunFolder

    kw = dict(batch_size=2, seed=1, config={"run": 1})
    reference = list(run_dataset(_tensors(), _Pooled(), out=tmp_path / "whole", pool=3, **kw).records())
    old = RunFolder(tmp_path / "old")  # as the runner wrote it before pools: no "pool" in the configuration
    old.prepare({"run": 1}, "new")
    first = [r for r in reference if r["index"] < 2]
    old.append(0, [{k: v for k, v in r.items()} for r in first], [])
    again = _Pooled()
    resumed = run_dataset(_tensors(), again, out=tmp_path / "old", pool=3, **kw)
    assert again.calls == [[1], [2], [3]] and resumed.pool == 1  # as it was started, still called with lists
    assert list(resumed.records()) == reference
    assert json.loads((tmp_path / "old" / "config.json").read_text())["config"] == {"run": 1}
