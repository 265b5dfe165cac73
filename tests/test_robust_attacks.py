"""Robustness attacks (APGD, FAB-T, Square) and the cascade, on the example photos and the bundled model.

Every adversarial example returned is checked here again, independently: on the 8-bit grid, in [0,1],
inside the eps ball around the rounded clean image, and misclassified by a fresh forward pass.
Most tests use the photos at 112 px (4x cheaper; labels are the model's own clean predictions).
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepprobe.errors import DeepprobeError
from deepprobe.io import quantize
from deepprobe.options.attacks import AttackSettings, eps_key, expand_cascade, stage_names
from deepprobe.techniques.attacks import (ATTACKS, Checker, apgd, apgd_targeted, fab_targeted, robust_batch,
                                          square)
from deepprobe.techniques.attacks import cascade as cascade_module
from deepprobe.techniques.attacks import rng
from deepprobe.techniques.attacks.fab import hyperplane_step

EXAMPLE_NAMES = ("astronaut", "cat", "coffee", "motorcycle", "rocket")


@pytest.fixture(scope="module")
def photos224(lite0, examples):
    x = quantize(torch.cat([lite0.load_image(examples / f"{n}.jpg") for n in EXAMPLE_NAMES]))
    with torch.no_grad():
        return x, lite0.net(x).argmax(1)


@pytest.fixture(scope="module")
def photos(photos224, lite0):
    x = quantize(F.interpolate(photos224[0], size=(112, 112), mode="bilinear", antialias=True, align_corners=False))
    with torch.no_grad():
        return x, lite0.net(x).argmax(1)


def assert_valid(bundle, result, x, y, eps, norm):
    """Returned images: 8-bit grid, [0,1], inside the ball; `success` agrees with a fresh forward pass."""
    images = result.images
    assert torch.equal(images, (images * 255).round() / 255)
    assert images.min() >= 0 and images.max() <= 1
    delta = (images - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps * (1 + 1e-6) + 1e-6).all()), size
    with torch.no_grad():
        pred = bundle.net(images).argmax(1)
    assert torch.equal(pred != y, result.success)
    assert torch.equal(pred[result.success], result.predicted[result.success])
    assert bool((size[~result.success] == 0).all())  # where it failed: the clean image


def test_expand_cascade_and_settings():
    assert expand_cascade(["autoattack"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert expand_cascade(["square", "APGD-CE", "square"]) == ["square", "apgd-ce", "square"]
    assert stage_names(["apgd-ce", "square", "apgd-ce"]) == ["apgd-ce", "square", "apgd-ce#2"]
    with pytest.raises(DeepprobeError, match="unknown attack 'apgd-x'.*autoattack.*apgd-ce.*fab-t.*square"):
        expand_cascade(["apgd-ce", "apgd-x"])
    assert set(ATTACKS) == {"apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "pgd", "fgsm", "cw"}
    s = AttackSettings()
    assert (s.norm, s.steps, s.restarts, s.targets, s.queries) == ("linf", 100, 1, 9, 5000)
    with pytest.raises(DeepprobeError, match="norm"):
        AttackSettings(norm="l1")
    with pytest.raises(DeepprobeError, match="steps"):
        AttackSettings(steps=0)
    assert eps_key(8 / 255) == "0.03137255" and eps_key(0) == "0"


def test_bad_input_is_one_clear_error(lite0, photos):
    x, y = photos
    cases = [
        (lambda: apgd(lite0, x, y, 0.1, loss="kl"), "unknown loss 'kl'"),
        (lambda: apgd(lite0, x, y, 0.1, steps=0), "steps must be a whole number of at least 1"),
        (lambda: square(lite0, x, y, 0.1, norm="l1"), "unknown norm 'l1'"),
        (lambda: fab_targeted(lite0, x, y[:2], 0.1), "got 2 labels for 5 images"),
        (lambda: robust_batch(lite0, x, y, [-1 / 255]), "eps must be a finite number >= 0"),
        (lambda: robust_batch(lite0, x, y, []), "no eps given"),
        (lambda: robust_batch(lite0, x, y.clone().fill_(1000), [0.0]), "label 1000 is not a class"),
        (lambda: robust_batch(lite0, x, y, [0.0], cascade=["fab"]), "unknown attack 'fab'"),
        (lambda: robust_batch(lite0, x, y, [0.0], seeds=[1, 2]), "seeds"),
    ]
    for call, message in cases:
        with pytest.raises(DeepprobeError, match=message):
            call()


def test_apgd_ce_breaks_every_photo_at_8_255(lite0, photos224):
    x, y = photos224
    res = apgd(lite0, x, y, 8 / 255, steps=10, seeds=range(5))
    assert bool(res.success.all())
    assert_valid(lite0, res, x, y, 8 / 255, "linf")
    assert bool((res.cost <= 11).all()) and bool((res.cost >= 1).all())  # leaves the batch once fooled


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_targeted_attacks_and_square_break_most_photos(lite0, photos, norm, eps):
    x, y = photos
    runs = {
        "apgd-dlr": apgd(lite0, x, y, eps, norm=norm, loss="dlr", steps=5, seeds=range(5)),
        "apgd-t": apgd_targeted(lite0, x, y, eps, norm=norm, steps=5, targets=2, seeds=range(5)),
        "fab-t": fab_targeted(lite0, x, y, eps, norm=norm, steps=5, targets=2, seeds=range(5)),
    }
    if norm == "linf":  # Square needs far more queries at L2; its L2 search is checked in test_square_l2
        runs["square"] = square(lite0, x, y, eps, norm=norm, queries=100, seeds=range(5))
        with torch.no_grad():
            third = lite0.net(x).argsort(1, descending=True)[:, 2]  # an explicit target per image
        runs["apgd target="] = apgd(lite0, x, y, eps, norm=norm, loss="dlr", target=third, steps=5, seeds=range(5))
    for name, res in runs.items():
        assert int(res.success.sum()) >= 4, name
        assert_valid(lite0, res, x, y, eps, norm)


def test_square_l2_stays_in_the_ball_and_breaks(lite0, photos):
    x, y = photos
    pick = torch.tensor([0, 4])  # astronaut, rocket: Square breaks them within a few dozen queries
    res = square(lite0, x[pick], y[pick], 1.0, norm="l2", queries=40, seeds=[0, 4])
    assert bool(res.success.all())
    assert_valid(lite0, res, x[pick], y[pick], 1.0, "l2")
    again = ATTACKS["square"](lite0, x[pick], y[pick], 1.0, AttackSettings(norm="l2", queries=40), seeds=[0, 4])
    assert torch.equal(again.images, res.images) and torch.equal(again.cost, res.cost)


class _Rounded(nn.Module):
    """Rounds its input to 8 bits first: same predictions on the grid, zero gradient everywhere."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net((x * 255).round() / 255)


def test_gradient_masking_stops_gradient_attacks_not_square(lite0, photos):
    x, y = photos
    pick = torch.tensor([1, 2, 3])  # cat, coffee, motorcycle: random noise of 8/255 does not fool them
    x, y = x[pick], y[pick]
    masked = dataclasses.replace(lite0, net=_Rounded(lite0.net).eval())
    assert not bool(apgd(masked, x, y, 8 / 255, steps=10, seeds=[1, 2, 3]).success.any())
    assert not bool(fab_targeted(masked, x, y, 8 / 255, steps=5, targets=2, seeds=[1, 2, 3]).success.any())
    res = square(masked, x, y, 8 / 255, queries=100, seeds=[1, 2, 3])
    assert bool(res.success.all())
    assert_valid(lite0, res, x, y, 8 / 255, "linf")
    assert bool(apgd(lite0, x, y, 8 / 255, steps=10, seeds=[1, 2, 3]).success.all())  # the same images, unmasked


def _without_seconds(record: dict) -> dict:
    return {**record, "eps": {k: {f: v for f, v in r.items() if f != "seconds"} for k, r in record["eps"].items()}}


def test_results_do_not_depend_on_the_batch(lite0, photos):
    x, y = photos
    settings = AttackSettings(steps=6, queries=20)
    eps = [0.25 / 255, 1 / 255]
    batch = robust_batch(lite0, x[:3], y[:3], eps, cascade=["apgd-ce", "square"], settings=settings,
                         seeds=[7, 8, 9])
    costs = [r["eps"][eps_key(0.25 / 255)]["cost"] for r in batch.records]
    assert max(costs) > 3  # the attacks really iterated (random starts and square proposals were drawn)
    for i in (0, 2):
        alone = robust_batch(lite0, x[i:i + 1], y[i:i + 1], eps, cascade=["apgd-ce", "square"], settings=settings,
                             seeds=[7 + i])
        assert _without_seconds(alone.records[0]) == _without_seconds(batch.records[i])
        for e in eps:
            assert torch.equal(alone.adversarial[e][0], batch.adversarial[e][i])
    other_seed = robust_batch(lite0, x[:1], y[:1], eps, cascade=["apgd-ce"], settings=settings, seeds=[123])
    assert other_seed.records[0]["clean_pred"] == batch.records[0]["clean_pred"]


def test_cascade_attacks_only_what_is_still_robust(lite0, photos, monkeypatch):
    x, y = photos
    y = y.clone()
    y[3] = (y[3] + 1) % 1000  # a wrong label: misclassified clean, never attacked
    seen: list[tuple[str, float, list[int]]] = []

    def spy(name):
        attack = ATTACKS[name]

        def body(bundle, checker, keys, settings, progress):
            rows = [int((x == img).flatten(1).all(1).nonzero()[0]) for img in checker.x]
            seen.append((name, checker.eps, rows))
            return attack.body(bundle, checker, keys, settings, progress)
        return dataclasses.replace(attack, body=body)

    spied = {name: spy(name) for name in ATTACKS}
    monkeypatch.setattr(cascade_module, "ATTACKS", spied)
    eps = [1 / 255, 0, 0.1 / 255]
    events = []
    out = robust_batch(lite0, x, y, eps, cascade=["fgsm", "apgd-ce", "square"],
                       settings=AttackSettings(steps=3, queries=10), seeds=range(5), callback=events.append)
    finished = [(ev.attack, ev.eps, ev.step, ev.steps) for ev in events if ev.finished]
    assert finished == [(a, e, n, n) for e in (0.1 / 255, 1 / 255) for a, n in (("fgsm", 1), ("apgd-ce", 3),
                                                                                  ("square", 10))]
    assert all(0 <= ev.step <= ev.steps and 0 <= ev.robust <= 4 for ev in events)
    assert sorted(out.stage_robust) == [0.0, 0.1 / 255, 1 / 255]
    clean_correct = torch.tensor([r["clean_correct"] for r in out.records])
    assert not clean_correct[3] and bool(clean_correct[[0, 1, 2, 4]].all())
    assert all(torch.equal(v, clean_correct) for v in out.stage_robust[0.0].values())
    robust_before = clean_correct
    calls = iter(seen)
    for e in (0.1 / 255, 1 / 255):
        for stage in ("fgsm", "apgd-ce", "square"):
            expected = robust_before.nonzero().flatten().tolist()
            if expected:
                name, eps_seen, rows = next(calls)
                assert (name, eps_seen, rows) == (stage, e, expected)
            robust_before = out.stage_robust[e][stage]
            assert not bool((robust_before & ~clean_correct).any())
    assert next(calls, None) is None
    for i, record in enumerate(out.records):
        small, large = record["eps"][eps_key(0.1 / 255)], record["eps"][eps_key(1 / 255)]
        assert record["eps"]["0"]["robust"] == bool(clean_correct[i])
        assert large["robust"] == bool(out.stage_robust[1 / 255]["square"][i])
        if i == 3:
            assert small["broken_by"] == large["broken_by"] == "clean" and small["cost"] == large["cost"] == 0
        elif not small["robust"]:  # broken at the small eps: inherited, not attacked again
            assert large == {**small, "cost": 0, "seconds": 0.0}
        if not large["robust"] and i != 3:
            assert large["broken_by"] in ("fgsm", "apgd-ce", "square")
            assert large["linf"] <= 1 / 255 + 1e-6
            with torch.no_grad():
                pred = int(lite0.net(out.adversarial[1 / 255][i:i + 1]).argmax(1))
            assert pred == large["final_class"] != int(y[i])
    assert not out.records[1]["eps"][eps_key(1 / 255)]["robust"]  # 1/255 breaks the cat at 112 px
    only_clean = robust_batch(lite0, x, y, 0.0, examples=False)  # eps 0: no attack at all
    assert only_clean.adversarial == {} and only_clean.eps == [0.0]
    assert [r["eps"]["0"]["robust"] for r in only_clean.records] == clean_correct.tolist()


def test_checker_counts_only_valid_8bit_examples(lite0, photos):
    x, y = photos
    x, y = x[:2], y[:2]
    gen = torch.Generator().manual_seed(0)
    for norm, eps in (("linf", 8 / 255), ("l2", 2.0)):
        checker = Checker(lite0, x, y, eps, norm)
        noise = torch.randn(x.shape, generator=gen)
        far = x + 3 * eps * (noise.sign() if norm == "linf" else noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
        nan = far.clone()
        nan[1, 0, 0, 0] = float("nan")
        checker(torch.arange(2), nan)
        assert not bool(checker.success[1])  # a NaN anywhere disqualifies the example
        checker(torch.arange(2), far)  # far outside the ball: counted only after projecting into it
        delta = (checker.images - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert bool((size <= eps * (1 + 1e-6)).all())
        assert torch.equal(checker.images, (checker.images * 255).round() / 255)
    assert not bool(Checker(lite0, x, y, 8 / 255, "linf")(torch.arange(2), x).any())  # the clean image never counts


def test_hyperplane_step_is_the_smallest_change_in_the_box():
    gen = torch.Generator().manual_seed(0)
    t, w = torch.rand(4, 40, generator=gen).double(), torch.randn(4, 40, generator=gen).double()
    w[:, :3] = 0
    c = torch.tensor([0.0, 1.5, -2.0, 1e6]).double()
    for norm in ("linf", "l2"):
        d = hyperplane_step(t.float(), w.float(), c.float(), norm).double()
        assert bool(((t + d) >= -1e-6).all() and ((t + d) <= 1 + 1e-6).all())
        assert torch.allclose((w * d).sum(1)[:3], c[:3], atol=1e-4)
        assert bool((d[:, :3] == 0).all())
        # infeasible row: every coordinate at its box edge, in the direction of w
        assert torch.allclose(d[3, 3:], torch.where(w[3, 3:] > 0, 1 - t[3, 3:], -t[3, 3:]), atol=1e-6)
        # minimal: any other feasible point on the plane (d plus a box-respecting move within it) is larger
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        for _ in range(20):
            e = torch.randn(4, 40, generator=gen).double() * 0.01
            e[:, :3] = 0
            e -= (e * w).sum(1, keepdim=True) / (w * w).sum(1, keepdim=True) * w  # stay on the plane
            other = d + e
            inside = ((t + other) >= 0).all(1) & ((t + other) <= 1).all(1)
            other_size = other.abs().amax(1) if norm == "linf" else other.norm(dim=1)
            assert bool((other_size[:3][inside[:3]] >= size[:3][inside[:3]] - 1e-9).all())


def test_random_streams_are_per_image():
    keys = rng.keys([5, 6, 7], 3, "cpu")
    assert torch.equal(rng.keys([6], 1, "cpu"), keys[1:2])
    u = rng.uniform(keys, (4, 3))
    assert torch.equal(rng.uniform(keys[1:2], (4, 3))[0], u[1])
    assert not torch.equal(u[0], u[1])
    assert not torch.equal(rng.uniform(rng.derive(keys, "a"), (4,)), rng.uniform(rng.derive(keys, "b"), (4,)))
    big = rng.uniform(rng.keys(0, 1, "cpu"), (20000,))[0]
    assert 0.49 < float(big.mean()) < 0.51 and float(big.min()) >= 0 and float(big.max()) < 1
    z = rng.normal(rng.keys(1, 1, "cpu"), (20000,))[0]
    assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1) < 0.03
