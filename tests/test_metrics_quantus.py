"""Every metric of `deepprobe.explain.metrics` against Quantus 0.6 on the same photos, maps, classes and settings.

Deterministic metrics must give Quantus's numbers; random ones get Quantus's random draws handed over (the same
subsets / noise / classes), so the formulas are compared exactly and the draws separately. Photos are the
examples at 64 px (the bundled net is fully convolutional); maps are Grad-CAM, integrated gradients and a random
map (integrated gradients gives maps of the same kind: it runs in test_evaluate_metrics.py), each plus a tiny ramp so no two pixels tie (tie order is unspecified in NumPy's argsort).
Quantus normalises a whole batch by its largest value; the tests ask it to normalise per image
(`normalise_axes`), which is what deepprobe does (see README, departures from Quantus).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deepprobe as dp
from deepprobe.explain.metrics import complexity as cx
from deepprobe.explain.metrics import faithfulness as fa
from deepprobe.explain.metrics import localisation as lo
from deepprobe.explain.metrics import randomisation as ra
from deepprobe.explain.metrics import robustness as ro
from deepprobe.explain.metrics.core import generators

quantus = pytest.importorskip("quantus")
warnings.filterwarnings("ignore", module="quantus")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SIZE = 64
PER_IMAGE = {"normalise_axes": [1, 2, 3]}
SEEDS = [11, 12]


@pytest.fixture(scope="module")
def photos(lite0):
    x = torch.cat([lite0.load_image(EXAMPLES / name) for name in ("cat.jpg", "coffee.jpg")])
    return F.interpolate(x, size=(SIZE, SIZE), mode="area")


@pytest.fixture(scope="module")
def targets(lite0, photos):
    return lite0.predict(photos).argmax(1)


def _tie_free(maps: torch.Tensor) -> torch.Tensor:
    """Adds a scrambled ramp of steps 1e-3 / pixels: wider than float32's spacing, so no two pixels tie."""
    p = maps[0].numel()
    ramp = torch.randperm(p, generator=torch.Generator().manual_seed(0)).double().view(maps.shape[1:]) / p
    return (maps.double() + 1e-3 * ramp).float()


@pytest.fixture(scope="module", params=["gradcam", "random"])
def maps(request, lite0, photos, targets):
    if request.param == "random":
        from deepprobe.explain.faithfulness import random_map

        return request.param, _tie_free(random_map(photos, 3, cell=8))
    return request.param, _tie_free(dp.explain(lite0, photos, request.param, target=targets))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _quantus(metric, lite0, photos, targets, maps, **kw):
    return np.asarray(metric(model=lite0.net if lite0 is not None else None, x_batch=_np(photos), y_batch=_np(targets), a_batch=_np(maps)[:, None],
                             device="cpu", **kw), dtype=np.float64)


def _explain_func(lite0, method):
    """Quantus's explain_func: deepprobe's method on the network Quantus hands over (MPRT randomizes a copy)."""
    def explain(model, inputs, targets, **kwargs):
        import dataclasses

        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        probe = dataclasses.replace(lite0, net=model)
        return _np(dp.explain(probe, x, method, target=torch.as_tensor(np.asarray(targets))))[:, None]
    return explain


# ------------------------------------------------------------------------------------------ faithfulness
def test_pixel_flipping_equals_quantus(lite0, photos, targets, maps):
    """At 48 px: Quantus wants features_in_step to divide H*W, and a multiple of 3 keeps each step to whole
    pixels (the order of a pixel's three equal channel entries is NumPy's to choose)."""
    _, a = maps
    x, a = F.interpolate(photos, size=(48, 48), mode="area"), F.interpolate(a[:, None], size=(48, 48))[:, 0]
    step = 3 * 48 * 4  # 12 steps
    ours = fa.pixel_flipping(lite0.net, x, a, targets, features_in_step=step, seeds=SEEDS)
    q = quantus.PixelFlipping(features_in_step=step, normalise_func_kwargs=PER_IMAGE, disable_warnings=True)
    curves = _quantus(q, lite0, x, targets, a)
    np.testing.assert_allclose(ours.curve.numpy(), curves, atol=1e-4)
    np.testing.assert_allclose(ours.values.numpy(), np.trapezoid(curves, dx=1, axis=1), rtol=1e-5, atol=1e-5)
    assert ours.curve.shape == (2, 12) and ours.axis[-1] == 1.0


def test_region_perturbation_equals_quantus(lite0, photos, targets, maps):
    _, a = maps
    for order in ("morf", "lerf"):
        ours = fa.region_perturbation(lite0.net, photos, a, targets, patch_size=8, order=order,
                                      regions_evaluation=20, seeds=SEEDS)
        q = quantus.RegionPerturbation(patch_size=8, order=order, regions_evaluation=20,
                                       normalise_func_kwargs=PER_IMAGE, disable_warnings=True)
        curves = _quantus(q, lite0, photos, targets, a)
        np.testing.assert_allclose(ours.curve.numpy(), curves, atol=1e-4)
        np.testing.assert_allclose(ours.values.numpy(), curves.sum(1) / 21, atol=2e-6)  # AOPC over k = 0..20


def test_region_perturbation_pads_like_quantus(lite0, photos, targets, maps):
    """60 px is no multiple of the 8-px patches: Quantus pads the grid (half before, half after)."""
    _, a = maps
    x, a = photos[..., :60, :60], a[..., :60, :60]
    ours = fa.region_perturbation(lite0.net, x, a, targets, patch_size=8, regions_evaluation=6, seeds=SEEDS)
    q = quantus.RegionPerturbation(patch_size=8, regions_evaluation=6, normalise_func_kwargs=PER_IMAGE,
                                   disable_warnings=True)
    np.testing.assert_allclose(ours.curve.numpy(), _quantus(q, lite0, x, targets, a), atol=1e-4)


def test_faithfulness_correlation_equals_quantus_on_the_same_subsets(lite0, photos, targets, maps, monkeypatch):
    _, a = maps
    subsets = fa.random_subsets(photos, SEEDS, runs=12, size=224)
    ours = fa.faithfulness_correlation(lite0.net, photos, a, targets, subsets=subsets)
    draws = iter([_np(subsets[i, r]) for r in range(12) for i in range(2)])  # Quantus: run by run, image by image
    monkeypatch.setattr(np.random, "choice", lambda *args, **kw: next(draws))
    q = quantus.FaithfulnessCorrelation(nr_runs=12, subset_size=224, return_aggregate=False,
                                        normalise_func_kwargs=PER_IMAGE, disable_warnings=True)
    np.testing.assert_allclose(ours.values.numpy(), _quantus(q, lite0, photos, targets, a), atol=1e-4)
    # the draw itself: without replacement, within range, seeded per image
    assert all(len(set(row.tolist())) == 224 for row in subsets.flatten(0, 1))
    assert int(subsets.max()) < photos[0].numel()
    assert torch.equal(subsets[1], fa.random_subsets(photos[1:], SEEDS[1:], runs=12, size=224)[0])


def test_road_equals_quantus_on_single_channel_images(lite0, photos, targets, maps):
    """Quantus 0.6's ROAD ranks channel entries but imputes pixels, so it fails on RGB (IndexError); on grey
    images the two definitions coincide and deepprobe must give its numbers (noise 0: deterministic)."""
    _, a = maps
    grey = photos.mean(1, keepdim=True)

    def net(x):
        return lite0.net(x.expand(-1, 3, -1, -1))

    class Grey(torch.nn.Module):
        def forward(self, x):
            return net(x)

    ours = fa.road(net, grey, a, targets, percentages=(5, 30, 60, 90), noise=0.0, seeds=SEEDS)
    for i in range(2):  # one image per call: Quantus reports the mean over its batch
        q = quantus.ROAD(percentages=[5, 30, 60, 90], noise=0.0, normalise_func_kwargs=PER_IMAGE,
                         disable_warnings=True)
        scores = q(model=Grey().eval(), x_batch=_np(grey[i:i + 1]), y_batch=_np(targets[i:i + 1]),
                   a_batch=_np(a[i:i + 1])[:, None], device="cpu")
        np.testing.assert_array_equal(ours.curves["morf"][i].numpy(), [scores[p] for p in (5, 30, 60, 90)])
    assert set(ours.curves) == {"morf", "lerf"}
    torch.testing.assert_close(ours.values, ours.extra["lerf"] - ours.extra["morf"])


def test_road_equals_quantus_on_rgb_photos_with_noise(lite0, monkeypatch):
    """The default case: RGB photos, noise 0.01. Quantus 0.6's ROAD cannot run it as it stands (it ranks the map's
    entries broadcast over the channels, counts H*W*p/100 of them and hands them to an imputation that indexes
    pixels: IndexError). Handed the map once per channel, and a perturb_func that turns the entries it removes back
    into their pixels, it removes exactly deepprobe's pixels: with a tie-free map each pixel's three entries sit
    side by side in its order, and at 80 px H*W*p/100 is whole, so 3*H*W*p/100 entries are whole pixels. The
    imputation is then Quantus's own `noisy_linear_imputation`, with deepprobe's noise draws handed over. MoRF is
    Quantus's ROAD of the map, LeRF Quantus's ROAD of the map turned upside down (max + 0.001 - map, in float64:
    Quantus refuses negative maps)."""
    from quantus.functions.perturb_func import noisy_linear_imputation

    side, percentages = 80, [5, 20, 40, 60, 80, 95]
    x = F.interpolate(torch.cat([lite0.load_image(EXAMPLES / n) for n in ("cat.jpg", "coffee.jpg")]),
                      size=(side, side), mode="area")
    t = lite0.predict(x).argmax(1)
    a = _tie_free(dp.explain(lite0, x, "gradcam", target=t))
    ours = fa.road(lite0.net, x, a, t, percentages=percentages, seeds=SEEDS)
    hw = side * side

    def replaying(gen):
        def perturb(arr, indices, noise, **kwargs):
            pixels = np.unique(np.asarray(indices) % hw)
            assert len(pixels) * arr.shape[0] == len(indices)  # whole pixels, all three channels
            draw = torch.randn(arr.shape, generator=gen, dtype=torch.float32).view(arr.shape[0], -1)[:, pixels]
            with monkeypatch.context() as patched:
                patched.setattr(np.random, "randn", lambda *shape: draw.double().numpy())
                return noisy_linear_imputation(arr, pixels, noise=noise)
        return perturb

    for i in range(2):
        gen = generators(SEEDS[i:i + 1], "cpu", stream=2)[0]  # deepprobe's noise stream of image i
        mine = _np(a[i:i + 1]).astype(np.float64)
        for order, given in (("morf", mine), ("lerf", mine.max() + 1e-3 - mine)):  # (one stream: MoRF's draws, LeRF's)
            q = quantus.ROAD(percentages=percentages, perturb_func=replaying(gen), normalise_func_kwargs=PER_IMAGE,
                             disable_warnings=True)
            scores = q(model=lite0.net, x_batch=_np(x[i:i + 1]), y_batch=_np(t[i:i + 1]),
                       a_batch=given[:, None].repeat(3, 1), device="cpu")
            np.testing.assert_array_equal(ours.curves[order][i].numpy(), [scores[p] for p in percentages],
                                          err_msg=f"{order} {i}")
    assert 0 < float(torch.cat(list(ours.curves.values())).mean()) < 1  # the model both keeps and loses its class
    torch.testing.assert_close(ours.values, ours.extra["lerf"] - ours.extra["morf"])


def test_infidelity_equals_quantus(lite0, photos, targets, maps):
    _, a = maps
    ours = fa.infidelity(lite0.net, photos, a, targets, perturb_patch_sizes=(16,))
    q = quantus.Infidelity(perturb_patch_sizes=[16], n_perturb_samples=2, disable_warnings=True)
    np.testing.assert_allclose(ours.values.numpy(), _quantus(q, lite0, photos, targets, a), rtol=1e-4)


# ------------------------------------------------------------------------------------------ robustness
def _replay(seeds, stream, draw):
    """A NumPy stand-in that hands Quantus, row by row, the draws deepprobe makes for each image."""
    gens = generators(seeds, "cpu", stream=stream)

    def fake(*args, size=None, **kwargs):
        return np.stack([_np(draw(g, size[1:])) for g in gens]).astype(np.float64)
    return fake


def test_max_sensitivity_equals_quantus_on_the_same_noise(lite0, photos, targets, monkeypatch):
    a = dp.explain(lite0, photos, "gradcam", target=targets)
    explainer = lambda x, t, s: dp.explain(lite0, x, "gradcam", target=t)  # noqa: E731
    ours = ro.max_sensitivity(explainer, photos, targets, nr_samples=3, seeds=SEEDS, batch_size=4)
    monkeypatch.setattr(np.random, "uniform", _replay(SEEDS, 3, lambda g, shape: torch.rand(shape, generator=g)
                                                      * 0.4 - 0.2))
    q = quantus.MaxSensitivity(nr_samples=3, disable_warnings=True)
    expected = _quantus(q, lite0, photos, targets, a, explain_func=_explain_func(lite0, "gradcam"))
    np.testing.assert_allclose(ours.values.numpy(), expected, rtol=2e-3, atol=1e-4)
    assert (ours.values > 0).all()


def test_local_lipschitz_equals_quantus_on_the_same_noise(lite0, photos, targets, monkeypatch):
    a = dp.explain(lite0, photos, "gradcam", target=targets)
    explainer = lambda x, t, s: dp.explain(lite0, x, "gradcam", target=t)  # noqa: E731
    ours = ro.local_lipschitz(explainer, photos, a, targets, nr_samples=3, seeds=SEEDS, batch_size=4)
    monkeypatch.setattr(np.random, "normal", _replay(SEEDS, 4, lambda g, shape: 0.1 * torch.randn(shape,
                                                                                                 generator=g)))
    q = quantus.LocalLipschitzEstimate(nr_samples=3, normalise_func_kwargs=PER_IMAGE, disable_warnings=True)
    expected = _quantus(q, lite0, photos, targets, a, explain_func=_explain_func(lite0, "gradcam"))
    np.testing.assert_allclose(ours.values.numpy(), expected, rtol=2e-3)


# ------------------------------------------------------------------------------------------ randomisation
def test_random_logit_equals_quantus_with_its_classes(lite0, photos, targets):
    """Saliency: a 2x2 Grad-CAM of another class can be all zero at 64 px, which Quantus refuses."""
    a = dp.explain(lite0, photos, "saliency", target=targets)
    np.random.seed(42)  # the class Quantus draws for each image (RandomLogit seeds NumPy with 42)
    draw = torch.as_tensor(np.random.randint(0, 999, 2))
    classes = draw + (draw >= targets).long()
    explainer = lambda x, t, s: dp.explain(lite0, x, "saliency", target=t)  # noqa: E731
    ours = ra.random_logit(explainer, photos, a, targets, 1000, classes=classes)
    q = quantus.RandomLogit(num_classes=1000, normalise_func_kwargs=PER_IMAGE, disable_warnings=True)
    expected = _quantus(q, lite0, photos, targets, a, explain_func=_explain_func(lite0, "saliency"))
    np.testing.assert_allclose(ours.values.numpy(), expected, rtol=1e-6, atol=1e-8)
    # our own draw: never the target, seeded per image
    drawn = ra.off_classes(targets.repeat(50), 1000, list(range(100)))
    assert not (drawn == targets.repeat(50)).any() and len(set(drawn.tolist())) > 50


def test_ssim_equals_skimage():
    from skimage.metrics import structural_similarity

    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 300, generator=gen), torch.rand(3, 300, generator=gen)
    b[0] = a[0] * 0.9 + 0.05
    for i in range(3):
        both = np.concatenate([_np(a[i]), _np(b[i])])
        ref = structural_similarity(_np(a[i]).astype(np.float64), _np(b[i]).astype(np.float64),
                                    data_range=float(both.max() - both.min()))
        assert abs(float(ra.ssim(a[i:i + 1], b[i:i + 1])) - ref) < 1e-10


def _quantus_random_weights(modules, generator) -> None:
    """Quantus's draw (`PyTorchModel.get_random_layer_generator`): every module with `reset_parameters` is reset
    right after `torch.manual_seed(seed + 1)` (seed 42), so each layer's random weights depend on its shape alone
    and the fully random network is the same whatever the order or grouping of the layers."""
    for member in modules:
        for module in member.modules():
            if hasattr(module, "reset_parameters"):
                torch.manual_seed(43)
                module.reset_parameters()


def test_sanity_equals_quantus_mprt_on_the_same_random_weights(lite0, cat, coffee, monkeypatch):
    """Handed Quantus's random weights, deepprobe's cascade ends on the network Quantus's MPRT ends on, and each
    image's last correlation (Spearman of Grad-CAM before and after) equals Quantus's (160 px: a 5x5 CAM). With its
    own draws the distribution agrees: little correlation left."""
    from deepprobe.explain import sanity as cascade

    x = F.interpolate(torch.cat([cat, coffee]), size=(160, 160), mode="area")
    t = lite0.predict(x).argmax(1)
    a = dp.explain(lite0, x, "gradcam", target=t)
    explainers = {"gradcam": lambda probe, xx: dp.explain(probe, xx, "gradcam", target=t)}
    own = ra.sanity(lite0, x, explainers, {"gradcam": a}, seed=0)["gradcam"]
    monkeypatch.setattr(cascade, "randomize_", _quantus_random_weights)
    ours = ra.sanity(lite0, x, explainers, {"gradcam": a}, seed=0)["gradcam"]
    q = quantus.MPRT(return_last_correlation=True, skip_layers=True, seed=42, disable_warnings=True)
    theirs = np.asarray(q(model=lite0.net, x_batch=_np(x), y_batch=_np(t), a_batch=_np(a)[:, None], device="cpu",
                          explain_func=_explain_func(lite0, "gradcam")), dtype=np.float64)
    np.testing.assert_allclose(ours.values.numpy(), theirs, atol=1e-4)
    assert ours.values.shape == (2,) and np.abs(theirs).max() > 0.05, theirs  # not zeros on both sides
    assert abs(float(own.values.mean())) < 0.5, own.values


# ------------------------------------------------------------------------------------------ complexity
def test_sparseness_and_complexity_equal_quantus(lite0, photos, targets, maps):
    _, a = maps
    for ours, metric in ((cx.sparseness(a), quantus.Sparseness), (cx.complexity(a), quantus.Complexity)):
        q = metric(normalise_func_kwargs=PER_IMAGE, disable_warnings=True)
        np.testing.assert_allclose(ours.values.numpy(), _quantus(q, None, photos, targets, a), rtol=1e-5)


# ------------------------------------------------------------------------------------------ localisation
@pytest.fixture(scope="module")
def masks():
    m = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    m[0, 10:40, 20:50] = True
    m[1, 30:60, 0:25] = True
    return m


def test_localisation_equals_quantus(lite0, photos, targets, maps, masks):
    _, a = maps
    for ours, metric in ((lo.pointing_game(a, masks), quantus.PointingGame),
                         (lo.relevance_mass(a, masks), quantus.RelevanceMassAccuracy),
                         (lo.relevance_rank(a, masks, seeds=SEEDS), quantus.RelevanceRankAccuracy)):
        q = metric(normalise_func_kwargs=PER_IMAGE, disable_warnings=True)
        expected = np.asarray(q(model=None, x_batch=_np(photos), y_batch=_np(targets), a_batch=_np(a)[:, None],
                                s_batch=_np(masks)[:, None].astype(np.float32)), dtype=np.float64)
        np.testing.assert_allclose(ours.values.numpy(), expected, rtol=1e-6)


def test_localisation_reads_the_mask():
    a = torch.zeros(1, 8, 8)
    a[0, 2, 3] = 1.0
    a[0, 6, 6] = 0.5
    inside = torch.zeros(1, 8, 8, dtype=torch.bool)
    inside[0, 1:4, 2:5] = True
    assert float(lo.pointing_game(a, inside).values) == 1.0
    assert float(lo.pointing_game(a, ~inside).values) == 0.0
    assert abs(float(lo.relevance_mass(a, inside).values) - 1 / 1.5) < 1e-9
    assert float(lo.relevance_rank(a, inside).values) == pytest.approx(1 / 9)
    assert torch.isnan(lo.relevance_mass(a, torch.zeros_like(inside)).values).all()
