"""`dp.evaluate` and `deepprobe evaluate` on the example photos with the bundled model: curves start at the clean
probability and end at the fill's, Grad-CAM beats its inverse and the random map, randomization destroys the maps
while the user's weights stay untouched, Spearman matches scipy, the CLI writes its plots and numbers."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

import deepprobe as dp
from deepprobe.cli import app
from deepprobe.explain.faithfulness import (auc, deletion_insertion, edge_map, fill_image, pixel_ranks,
                                            random_map)
from deepprobe.explain.sanity import average_ranks, cascading_randomization, randomization_groups, spearman

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PHOTOS = ("astronaut.jpg", "cat.jpg", "coffee.jpg", "motorcycle.jpg", "rocket.jpg")
SIZE = 128  # the net is fully convolutional: small photos keep the test fast
STEPS = 8


@pytest.fixture(scope="module")
def photos(lite0):
    x = torch.cat([lite0.load_image(EXAMPLES / name) for name in PHOTOS])
    return F.interpolate(x, size=(SIZE, SIZE), mode="area")


@pytest.fixture(scope="module")
def faithfulness(lite0, photos):
    """Grad-CAM, random and edge curves of every example photo (sanity check off)."""
    return dp.evaluate(lite0, photos, "gradcam", metrics=["deletion", "insertion"], steps=STEPS, seed=0)


# ------------------------------------------------------------------------------------------ curves
def test_curves_start_at_the_clean_probability_and_end_at_the_fill(lite0, photos, faithfulness):
    r = faithfulness
    clean = lite0.predict(photos).gather(1, r.targets.view(-1, 1))[:, 0]
    deleted = lite0.predict(fill_image(photos, "mean", lite0.preprocess.mean)).gather(1, r.targets.view(-1, 1))[:, 0]
    canvas = lite0.predict(fill_image(photos, "blur")).gather(1, r.targets.view(-1, 1))[:, 0]
    assert torch.equal(r.targets, lite0.predict(photos).argmax(1))  # no target: the predicted class
    assert r.fractions[0] == 0 and r.fractions[-1] == 1 and len(r.fractions) == STEPS + 1
    for name in ("gradcam", "random", "edge"):
        assert r.deletion[name].shape == (len(PHOTOS), STEPS + 1)
        torch.testing.assert_close(r.deletion[name][:, 0], clean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(r.deletion[name][:, -1], deleted, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(r.insertion[name][:, 0], canvas, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(r.insertion[name][:, -1], clean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(r.deletion_auc[name], auc(r.deletion[name], r.fractions).double())
    # the photo's class is gone once every pixel is the mean colour, and absent from the blurred canvas
    assert (deleted < 0.5 * clean).all() and (canvas < clean).all(), (clean, deleted, canvas)


def test_gradcam_beats_its_inverse_and_the_random_map(lite0, photos, faithfulness):
    r = faithfulness
    cam = r.maps["gradcam"]
    inv_del, inv_ins = deletion_insertion(lite0.net, photos, [1 - cam], r.targets, STEPS,
                                          mean=lite0.preprocess.mean)
    inv_del_auc, inv_ins_auc = auc(inv_del[0], r.fractions), auc(inv_ins[0], r.fractions)
    d, i = r.deletion_auc, r.insertion_auc
    # deleting what Grad-CAM points at first destroys the class faster than deleting it last, or at random
    assert d["gradcam"].mean() < inv_del_auc.mean() - 0.05, (d["gradcam"], inv_del_auc)
    assert d["gradcam"].mean() < d["random"].mean(), (d["gradcam"], d["random"])
    # inserting it first brings the class back faster
    assert i["gradcam"].mean() > inv_ins_auc.mean() + 0.05, (i["gradcam"], inv_ins_auc)
    assert i["gradcam"].mean() > i["random"].mean() + 0.05, (i["gradcam"], i["random"])
    assert (i["gradcam"] > i["random"]).sum() >= 3, (i["gradcam"], i["random"])  # on most photos, not only on average


def test_curves_need_one_loop_for_every_map_and_agree_with_single_maps(lite0, photos, faithfulness):
    """Batching across maps, photos and steps changes nothing: one map on one photo gives the same curve."""
    r = faithfulness
    d1, i1 = deletion_insertion(lite0.net, photos[2:3], [r.maps["edge"][2:3]], r.targets[2:3], STEPS,
                                batch_size=5, mean=lite0.preprocess.mean)
    torch.testing.assert_close(d1[0, 0], r.deletion["edge"][2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(i1[0, 0], r.insertion["edge"][2], atol=1e-5, rtol=1e-4)


def test_baseline_maps_and_ranks():
    x = torch.zeros(1, 3, 64, 64)
    x[..., 16:48, 16:48] = 1.0  # a white square
    edges = edge_map(x)[0]
    assert edges[16, 32] > 10 * edges[32, 32] and edges[16, 32] > 10 * edges[2, 2]  # on the border, not inside
    assert torch.equal(random_map(x, 3), random_map(x, 3)) and not torch.equal(random_map(x, 3), random_map(x, 4))
    assert random_map(x, 0, cell=1).shape == (1, 64, 64)
    # ranks: the marked quadrant comes first; ties among the zeros are broken at random, not in scan order
    m = torch.zeros(1, 64, 64)
    m[0, :32, :32] = 1.0
    ranks = pixel_ranks(m, seed=0)[0].view(64, 64)
    assert ranks[:32, :32].max() < 32 * 32 <= ranks[32:, :].min()
    zeros = ranks[32:, :].flatten().float()
    scan = torch.arange(zeros.numel()).float()
    assert abs(float(torch.corrcoef(torch.stack([zeros, scan]))[0, 1])) < 0.1


# ------------------------------------------------------------------------------------------ sanity
def test_spearman_matches_scipy_with_ties():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 6, (4, 300), generator=gen).float()
    b = (a + torch.randint(0, 4, (4, 300), generator=gen)).float()  # correlated, many ties
    ours = spearman(a, b)
    try:
        from scipy.stats import rankdata, spearmanr
    except ImportError:  # a hand-checked case instead
        torch.testing.assert_close(average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0]])),
                                   torch.tensor([[2.5, 0.0, 2.5, 1.0]], dtype=torch.float64))
        return
    expected = torch.tensor([spearmanr(a[i], b[i]).statistic for i in range(4)], dtype=torch.float32)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(average_ranks(a), torch.tensor(rankdata(a, axis=1) - 1))
    assert float(spearman(a, a).min()) > 0.99999 and float(spearman(a, -a).max()) < -0.99999
    assert float(spearman(torch.ones(1, 10), a[:1, :10])) == 0.0  # a constant map has no order


def test_groups_cascade_from_the_logits_down(lite0):
    names = [name for name, _ in randomization_groups(lite0.inner)]
    assert names == ["classifier", "conv_head", *[f"blocks.{i}" for i in range(6, -1, -1)], "conv_stem"]


def test_randomization_destroys_gradcam_and_leaves_the_probe_alone(lite0, cat, coffee):
    """At the model's 224 px (a 7x7 CAM: at 128 px the 4x4 CAM has too few cells for a steady rank correlation)."""
    photos = torch.cat([cat, coffee])
    before = {k: v.clone() for k, v in lite0.net.state_dict().items()}
    r = dp.evaluate(lite0, photos, "gradcam", metrics="sanity", baselines=False, seed=0)
    assert not r.deletion and r.sanity_layers[0] == "none" and r.sanity_layers[1] == "classifier"
    corr = r.sanity["gradcam"].float()
    assert corr.shape == (2, 1 + len(randomization_groups(lite0.inner)))
    torch.testing.assert_close(corr[:, 0], torch.ones(2), atol=1e-5, rtol=0)  # nothing randomized yet
    # every layer random: little left in common (seeds 0-2 give final means of -0.02 to 0.28, all steps 0.02-0.16)
    assert float(corr[:, -1].mean()) < 0.5, corr
    assert float(corr[:, 1:].mean()) < 0.35, corr
    after = lite0.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the user's weights are untouched
    # seeded: the same seed draws the same random weights
    explainer = lambda probe, x: dp.explain(probe, x, "gradcam", target=r.targets)  # noqa: E731
    _, again = cascading_randomization(lite0, photos, explainer, r.maps["gradcam"], seed=0)
    torch.testing.assert_close(again, corr)


# ------------------------------------------------------------------------------------------ CLI (photos)
def test_cli_photos_end_to_end(tmp_path):
    """Photo files: plots with sidecars (today's names), the per-photo numbers in --json, nothing resumable."""
    runner = CliRunner()
    out = tmp_path / "out"
    res = runner.invoke(app, ["evaluate", str(EXAMPLES / "cat.jpg"), str(EXAMPLES / "coffee.jpg"), "--steps", "3",
                              "--method", "gradcam", "--metric", "deletion", "--metric", "insertion", "--metric",
                              "sanity", "--metric", "sparseness", "--out", str(out), "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["command"] == "evaluate" and len(summary["results"]) == 2
    evaluation = summary["evaluation"]
    assert set(evaluation["metrics"]) == {"gradcam", "random", "edge"} and evaluation["n"] == 2
    assert set(evaluation["metrics"]["gradcam"]) == {"deletion", "insertion", "sanity", "sparseness"}
    # the summary's statistics against the per-photo numbers: mean +- 1.96 standard errors (sd with n - 1)
    per_photo = [r["scores"]["gradcam"]["deletion"]["value"] for r in summary["results"]]
    entry = evaluation["metrics"]["gradcam"]["deletion"]
    half = statistics.NormalDist().inv_cdf(0.975) * statistics.stdev(per_photo) / math.sqrt(2)
    assert entry["n"] == 2 and half > 0
    assert entry["mean"] == pytest.approx(statistics.mean(per_photo), abs=1e-6)
    assert entry["ci95"] == pytest.approx([entry["mean"] - half, entry["mean"] + half], abs=1e-5)
    assert len(evaluation["curves"]["deletion"]["curve"]["gradcam"]) == 4
    assert evaluation["axes"]["sanity"][:2] == ["none", "classifier"]
    assert evaluation["ranking"]["deletion"]["better"] == "lower"
    record = summary["results"][0]
    assert {"path", "target", "target_name", "probability", "scores"} <= set(record)
    assert len(record["scores"]["gradcam"]["deletion"]["curve"]) == 4
    outputs = {Path(p).name for p in summary["outputs"]}
    assert outputs == {f"evaluate_{k}.{e}" for k in ("curves", "sanity", "table") for e in ("png", "json")}
    assert not (out / "results.jsonl").exists() and not (out / "config.json").exists()
    sidecar = json.loads((out / "evaluate_table.json").read_text())
    assert sidecar["result"]["evaluation"]["metrics"] == evaluation["metrics"]
    assert len(sidecar["result"]["per_image"]) == 2 and sidecar["options"]["steps"] == 3
    from deepprobe.report import build_html, collect_runs  # `deepprobe report` shows the methods x metrics table

    page = build_html(collect_runs(out), title="t")
    table = page.split("explanation metrics", 1)[1]
    assert "deletion ↓" in table and "insertion ↑" in table and "<td>edge</td>" in table
    assert Image.open(out / "evaluate_table.png").size[0] > 400


@pytest.mark.parametrize("args, message", [
    (["--method", "gradcamm"], "unknown explanation method"),
    (["--metric", "pixel-flip"], "unknown metric 'pixel-flip'"),
    (["--metric", "pointing-game"], "needs a binary mask per image"),
    (["--target", "ostrichh"], "ostrich"),
    (["--steps", "0"], "--steps"),
    (["--deletion-fill", "pink"], "--deletion-fill"),
    (["--metric", "deletion", "--no-curves"], "nothing to do"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    res = CliRunner().invoke(app, ["evaluate", str(EXAMPLES / "cat.jpg"), "--out", str(tmp_path), "--device", "cpu",
                                   *args])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], res.output
    assert not list(tmp_path.iterdir())
