"""`deepprobe evaluate DATA`: a data-set run on robust-data's runner. results.jsonl has one line per image x method
x metric, summary.json the means/intervals/ranking; the Python API returns the same numbers; a run cut short
resumes to the same summary; masks come from a folder (by stem) or a manifest column; a 2-process torchrun
(gloo, slow) gives the same summary as one process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from threads import same_threads  # noqa: E402
import deepprobe as dp
from deepprobe.cli import app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ROOT = EXAMPLES.parent
NAMES = ("cat", "coffee", "rocket")
CHEAP = ["-M", "gradcam", "--metric", "deletion", "--metric", "sparseness", "--metric", "pointing-game",
         "--steps", "2", "--batch-size", "1", "--seed", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three photos at the model's 224 px (kept as they are) and a mask for each: the central square."""
    root = tmp_path_factory.mktemp("data")
    (root / "photos").mkdir()
    (root / "masks").mkdir()
    for name in NAMES:
        photo = Image.open(EXAMPLES / f"{name}.jpg").convert("RGB")
        side = min(photo.size)
        photo.crop((0, 0, side, side)).resize((224, 224)).save(root / "photos" / f"{name}.png")
        mask = Image.new("L", (224, 224), 0)
        mask.paste(255, (56, 56, 168, 168))
        mask.save(root / "masks" / f"{name}.png")
    return root


def cli(*args):
    return CliRunner().invoke(app, ["evaluate", *args])


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    res = cli(str(folder / "photos"), *CHEAP, "--masks", str(folder / "masks"), "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    (out / "stdout.json").write_text(res.stdout.strip().splitlines()[-1])
    return out


def test_data_run_writes_one_line_per_image_method_metric(reference):
    rows = lines(reference / "results.jsonl")
    assert len(rows) == 3 * 3 * 3  # images x (gradcam, random, edge) x metrics
    assert {(r["method"], r["metric"]) for r in rows} == {(m, k) for m in ("gradcam", "random", "edge")
                                                          for k in ("deletion", "sparseness", "pointing-game")}
    first = rows[0]
    assert {"index", "path", "label", "target", "target_name", "probability", "method", "metric", "value"} <= set(first)
    assert len(next(r for r in rows if r["metric"] == "deletion")["curve"]) == 3
    summary = json.loads((reference / "summary.json").read_text())
    printed = json.loads((reference / "stdout.json").read_text())["evaluation"]
    assert summary["metrics"] == printed["metrics"] and summary["n"] == 3
    for metric in ("deletion", "sparseness", "pointing-game"):
        values = [r["value"] for r in rows if r["method"] == "gradcam" and r["metric"] == metric]
        assert summary["metrics"]["gradcam"][metric]["mean"] == pytest.approx(sum(values) / 3, abs=1e-6)
    assert summary["ranking"]["deletion"]["test"].startswith("Wilcoxon")
    assert {p.name for p in reference.iterdir()} >= {"results.jsonl", "summary.json", "config.json",
                                                      "evaluate_curves.png", "evaluate_table.png"}


def test_python_api_returns_the_same_numbers(reference, folder, lite0):
    ours = dp.evaluate(lite0, str(folder / "photos"), methods=["gradcam"],
                       metrics=["deletion", "sparseness", "pointing-game"], masks=str(folder / "masks"), steps=2,
                       batch_size=1, seed=4)
    summary = json.loads((reference / "summary.json").read_text())
    assert ours.summary["metrics"] == summary["metrics"] and len(ours.records) == 3


def test_a_run_cut_short_resumes_to_the_same_summary(reference, folder, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.json", "parts"):  # the first two of three chunks finished, then the process died
        src = reference / name
        if src.is_dir():
            (out / name).mkdir()
            part = (src / "rank0.jsonl").read_text().splitlines(keepends=True)
            (out / name / "rank0.jsonl").write_text("".join(part[:2]) + part[2][:40])  # and a torn line
        else:
            (out / name).write_text(src.read_text())
    res = cli(str(folder / "photos"), *CHEAP, "--masks", str(folder / "masks"), "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["done_before"] == 2  # finished chunks were not redone
    mine, theirs = (json.loads((d / "summary.json").read_text()) for d in (out, reference))
    assert mine["metrics"] == theirs["metrics"] and mine["ranking"] == theirs["ranking"]
    assert lines(out / "results.jsonl") == lines(reference / "results.jsonl")
    # another configuration into the same folder is refused, and nothing there changes
    res = cli(str(folder / "photos"), *CHEAP, "--steps", "3", "--masks", str(folder / "masks"), "--out", str(out))
    assert res.exit_code == 2 and "another configuration" in res.stderr
    assert json.loads((out / "summary.json").read_text())["metrics"] == theirs["metrics"]


def test_a_manifest_can_name_the_masks(folder, tmp_path, lite0):
    """Each image's localisation scores use its own mask: the cat's mask is the left half, the coffee's the right
    half, and each relevance mass (and pointing game) equals the one computed here from the image's Grad-CAM and
    its own mask, which differs from the swapped mask's."""
    import numpy as np
    import torch

    halves = {}
    for name, side in zip(NAMES[:2], ("left", "right")):
        mask = np.zeros((224, 224), dtype=np.uint8)
        mask[:, (slice(0, 112) if side == "left" else slice(112, 224))] = 255
        Image.fromarray(mask).save(tmp_path / f"{name}_{side}.png")
        halves[name] = (tmp_path / f"{name}_{side}.png", torch.from_numpy(mask > 0))
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,mask\n" + "".join(f"{folder}/photos/{n}.png,{halves[n][0]}\n" for n in NAMES[:2]))
    res = cli(str(manifest), "-M", "gradcam", "--metric", "pointing-game", "--metric", "relevance-mass",
              "--no-baselines", "--out", str(tmp_path / "run"), "--json", "--device", "cpu")
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout.strip().splitlines()[-1])["evaluation"]["metrics"]
    assert set(metrics) == {"gradcam"} and metrics["gradcam"]["relevance-mass"]["n"] == 2
    rows = lines(tmp_path / "run" / "results.jsonl")
    for name in NAMES[:2]:
        x = lite0.load_image(folder / "photos" / f"{name}.png")
        heat = dp.explain(lite0, x, "gradcam", target=lite0.predict(x).argmax(1))[0].double()
        own, other = halves[name][1], halves[NAMES[1 - NAMES.index(name)]][1]
        mass = float(heat[own].sum() / heat.sum())
        assert abs(mass - float(heat[other].sum() / heat.sum())) > 0.1  # swapped masks would show
        got = {r["metric"]: r["value"] for r in rows if Path(r["path"]).stem == name}
        assert got["relevance-mass"] == pytest.approx(mass, abs=1e-4), name
        assert got["pointing-game"] == float(bool(own[heat == heat.max()].any())), name


def test_a_missing_mask_is_one_line_and_nothing_is_written(folder, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in NAMES[:2]:
        (masks / f"{name}.png").write_bytes((folder / "masks" / f"{name}.png").read_bytes())
    res = cli(str(folder / "photos"), *CHEAP, "--masks", str(masks), "--out", str(tmp_path / "run"))
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().count("\n") == 0 and "no mask for" in res.stderr and "rocket" in res.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(reference, folder, tmp_path):
    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": same_threads(),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "deepprobe", "evaluate", str(folder / "photos"), *CHEAP, "--masks",
                          str(folder / "masks"), "--out", str(out), "--json"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    printed = [line for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # only rank 0 speaks
    assert all((out / "parts" / f"rank{r}.jsonl").read_text().strip() for r in (0, 1))  # both ranks worked
    mine, theirs = (json.loads((d / "summary.json").read_text()) for d in (out, reference))
    assert mine["metrics"] == theirs["metrics"] and mine["ranking"] == theirs["ranking"]
    assert lines(out / "results.jsonl") == lines(reference / "results.jsonl")


def test_target_label_explains_each_images_own_label(folder, tmp_path, lite0):
    """Class folders name the class to explain: the cat photo filed under "ostrich" is explained as an ostrich
    (its probability is the ostrich's, far below the predicted class's), the coffee photo under its own class."""
    import shutil

    coffee_class = lite0.class_name(int(lite0.predict(lite0.load_image(folder / "photos" / "coffee.png")).argmax()))
    tree = tmp_path / "tree"
    for name, label in (("cat", "ostrich"), ("coffee", coffee_class)):
        (tree / label).mkdir(parents=True)
        shutil.copy(folder / "photos" / f"{name}.png", tree / label / f"{name}.png")
    out = tmp_path / "run"
    res = cli(str(tree), "-M", "gradcam", "--metric", "sparseness", "--target", "label", "--no-baselines",
              "--device", "cpu", "--out", str(out))
    assert res.exit_code == 0, res.output
    rows = {Path(r["path"]).stem: r for r in lines(out / "results.jsonl")}
    assert rows["cat"]["target_name"] == "ostrich" and rows["cat"]["label"] == rows["cat"]["target"]
    cat_probs = lite0.predict(lite0.load_image(folder / "photos" / "cat.png"))[0]
    assert rows["cat"]["probability"] == pytest.approx(float(cat_probs[rows["cat"]["target"]]), abs=1e-4)
    assert rows["cat"]["probability"] < float(cat_probs.max()) / 10
    assert rows["coffee"]["target_name"] == coffee_class
    flat = cli(str(folder / "photos"), "--target", "label", "--metric", "sparseness", "--out", str(tmp_path / "x"))
    assert flat.exit_code == 2 and "needs labels" in flat.stderr and len(flat.stderr.strip().splitlines()) == 1


# ----- a real process interrupted (slow): SIGINT after the first chunk, and SIGKILL -----------------------------
SLOWER = ["--steps", "20"]  # a few seconds per chunk: time to interrupt the second one


@pytest.fixture(scope="module")
def slower_reference(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("slower") / "run"
    res = cli(str(folder / "photos"), *CHEAP, *SLOWER, "--masks", str(folder / "masks"), "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_a_real_run_stopped_after_its_first_chunk_resumes_to_the_same_results(folder, slower_reference, tmp_path,
                                                                              signum):
    out = tmp_path / "run"
    args = [str(folder / "photos"), *CHEAP, *SLOWER, "--masks", str(folder / "masks"), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": same_threads(),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen([sys.executable, "-m", "deepprobe", "evaluate", *args, "-q"], env=env,
                            stderr=subprocess.PIPE, text=True)
    part = out / "parts" / "rank0.jsonl"
    deadline = time.monotonic() + 300
    while not (part.is_file() and part.read_text().count("\n") >= 1) and proc.poll() is None:
        assert time.monotonic() < deadline, "no chunk finished in time"
        time.sleep(0.02)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    finished = part.read_text().count("\n")
    assert 1 <= finished < 3, stderr
    if signum == signal.SIGINT:  # Ctrl-C: the finished chunks are merged and summarized, exit 130
        assert proc.returncode == 130 and "interrupted" in stderr, stderr
        assert json.loads((out / "summary.json").read_text())["n"] == finished and not \
            json.loads((out / "summary.json").read_text())["complete"]
    else:
        assert proc.returncode == -signal.SIGKILL and not (out / "results.jsonl").exists()
    res = cli(*args, "--json")
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout.strip().splitlines()[-1])
    assert printed["done_before"] == finished and printed["processed"] == 3 - finished  # nothing redone
    assert lines(out / "results.jsonl") == lines(slower_reference / "results.jsonl")
    mine, theirs = (json.loads((d / "summary.json").read_text()) for d in (out, slower_reference))
    assert mine["metrics"] == theirs["metrics"] and mine["ranking"] == theirs["ranking"] and mine["complete"]


def test_perturbation_metrics_share_full_forward_passes(folder, lite0):
    """Every perturbation metric of every map (gradcam, random, edge) is built into one stream of images per chunk,
    so a chunk costs ceil(images / pass size) passes (one partly empty at most), however many metrics and maps;
    summary.json reports how full the passes were."""
    import math

    from deepprobe.explain.metrics.faithfulness import flip_counts

    steps, regions, size = 2, 3, 8
    ours = dp.evaluate(lite0, str(folder / "photos"), methods=["gradcam"],
                       metrics=["deletion", "insertion", "pixel-flipping", "region-perturbation", "sparseness"],
                       steps=steps, regions=regions, features_in_step=3 * 224 * 224 // 4, batch_size=3,
                       forward_batch=size, seed=4)
    photos, maps = 3, 3
    images = maps * photos * (2 * (steps + 1) + len(flip_counts(3, 224, 224, 3 * 224 * 224 // 4)) + 1 + regions)
    forwards = ours.summary["forwards"]
    assert forwards["perturbations"] == {"passes": math.ceil(images / size), "images": images}
    assert ours.summary["occupancy"]["perturbations"] >= 0.9 and ours.summary["forward_batch"] == size
    assert forwards["clean"] == {"passes": 1, "images": photos}  # the chunk's clean pass, apart
