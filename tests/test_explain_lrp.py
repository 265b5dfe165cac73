"""LRP (Zennit), AttnLRP (LXT) and LeGrad (torch-cam): each against its reference library, plus the properties that
wrong code fails (relevance conservation, what is refused).

zennit, lxt and torchcam are installed by the README's test command: these tests fail, never skip, without them.
"""
from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from deepprobe.cli import app
from deepprobe.errors import DeepprobeError
from deepprobe.explain import explain
from deepprobe.explain.attnlrp import attnlrp_relevance
from deepprobe.explain.lrp import lrp_relevance
from deepprobe.explain.lrp_canonizers import batch_norm_pairs
from deepprobe.models.preprocess import LogitsOf, Normalized

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_vits  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def rebundle(bundle, inner: nn.Module):
    """The same bundle over another inner network (same normalization)."""
    return dataclasses.replace(bundle, net=Normalized(inner, bundle.net.mean.flatten().tolist(),
                                                      bundle.net.std.flatten().tolist()).eval())


@pytest.fixture(scope="module")
def small_photos(lite0):
    """Two example photos at 128 px (Lite0 takes any size; smaller keeps the rule passes cheap)."""
    x = torch.cat([lite0.load_image(EXAMPLES / name) for name in ("cat.jpg", "coffee.jpg")])
    return torch.nn.functional.interpolate(x, size=128, mode="bilinear", antialias=True).clamp(0, 1)


def fold_eps(net: nn.Module) -> nn.Module:
    """A copy whose BatchNorms carry their eps in the running variance (eps 0): the same function, which Zennit
    0.5's MergeBatchNorm then merges exactly (it keeps eps in the emptied BatchNorm)."""
    net = copy.deepcopy(net)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_var.add_(m.eps)
            m.eps = 0.0
    return net


# ------------------------------------------------------------------------------------------ LRP: conservation
def bias_free(net: nn.Module) -> nn.Module:
    """Lite0 with every bias zero (BatchNorm shifts and running means, the classifier's bias): the same layers,
    canonizers and scales, but nothing that absorbs relevance."""
    net = copy.deepcopy(net)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.zero_()
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear) and m.bias is not None:
            m.bias.data.zero_()
    return net


@pytest.mark.parametrize("composite, tolerance", [("epsilon-gamma-box", 1e-3), ("epsilon-plus-flat", 0.02)])
def test_lrp_relevance_sums_to_the_logit_without_biases(lite0, small_photos, composite, tolerance):
    """With no bias to absorb it, relevance is conserved from the logit down to the pixels: exactly (to the
    stabilizers) for epsilon-gamma-box, to the relevance ZPlus drops at units without a positive contribution for
    epsilon-plus-flat. A residual `+` left unsplit doubles relevance at each of Lite0's 9 skips (512x), relevance
    read at the pixels instead of after the normalization is off by 1/std, a backward seeded with 1 is off by the
    logit: each fails here."""
    probe = rebundle(lite0, bias_free(lite0.inner))
    targets = probe.net(small_photos).argmax(1)
    relevance, logits = lrp_relevance(probe, small_photos, targets, composite)
    with torch.no_grad():
        expected = probe.net(small_photos).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)  # canonized forward = the model's
    ratio = relevance.sum((1, 2, 3)) / logits
    assert ((ratio - 1).abs() < tolerance).all(), ratio


def test_lrp_merges_every_batchnorm_and_keeps_the_model_unchanged(lite0, small_photos):
    pairs = batch_norm_pairs(lite0, small_photos)
    assert len(pairs) == sum(isinstance(m, nn.BatchNorm2d) for m in lite0.inner.modules()) == 49
    before = [p.detach().clone() for p in lite0.inner.parameters()]
    explain(lite0, small_photos[:1], "lrp")
    assert all(torch.equal(a, b) for a, b in zip(before, lite0.inner.parameters()))  # canonizers removed
    assert not any("canonizer_sum" in dict(m.named_children()) for m in lite0.inner.modules())


# ------------------------------------------------------------------------------------------ LRP: against Zennit
def _named_pairs(net: nn.Module) -> list[tuple[list[str], str]]:
    """(conv, BatchNorm) names of timm's EfficientNet written out from its layout, not found by tracing (by class
    name: the bundled Lite0 is timm's layout rebuilt in plain torch, models/efficientnet_lite.py)."""
    pairs = [(["conv_stem"], "bn1"), (["conv_head"], "bn2")]
    for name, m in net.named_modules():
        if type(m).__name__ == "DepthwiseSeparableConv":
            pairs += [([f"{name}.conv_dw"], f"{name}.bn1"), ([f"{name}.conv_pw"], f"{name}.bn2")]
        elif type(m).__name__ == "InvertedResidual":
            pairs += [([f"{name}.conv_pw"], f"{name}.bn1"), ([f"{name}.conv_dw"], f"{name}.bn2"),
                      ([f"{name}.conv_pwl"], f"{name}.bn3")]
    return pairs


def _residual_by_hand(name, module):
    """Zennit's ResNet-canonizer pattern written out for timm's InvertedResidual (the bundled one's has its layout)."""
    from zennit.layer import Sum

    if not (type(module).__name__ == "InvertedResidual" and module.has_skip):
        return None

    def forward(self, x):
        out = self.bn3(self.conv_pwl(self.se(self.aa(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))))
        return self.canonizer_sum(torch.stack([x, out], dim=-1))

    return {"forward": forward.__get__(module), "canonizer_sum": Sum()}


@pytest.mark.parametrize("composite", ["epsilon-plus-flat", "epsilon-gamma-box", "epsilon-alpha2-beta1"])
def test_lrp_equals_zennits_attributor(lite0, small_photos, composite):
    """Zennit's own Gradient attributor and composite on the bundled model, canonized by hand (named BatchNorm
    pairs, a hand-written Sum forward), seeded with the logit, at the normalized input."""
    from zennit import composites as zc
    from zennit.attribution import Gradient
    from zennit.canonizers import AttributeCanonizer, NamedMergeBatchNorm

    probe = rebundle(lite0, fold_eps(lite0.inner))
    inner = probe.inner
    photo = small_photos[:1]
    xn = (photo - probe.net.mean) / probe.net.std
    targets = probe.net(photo).argmax(1)
    canonizers = [NamedMergeBatchNorm(_named_pairs(inner)), AttributeCanonizer(_residual_by_hand)]
    cls = {"epsilon-plus-flat": zc.EpsilonPlusFlat, "epsilon-gamma-box": zc.EpsilonGammaBox,
           "epsilon-alpha2-beta1": zc.EpsilonAlpha2Beta1}[composite]
    extra = {}
    if composite == "epsilon-gamma-box":
        extra = dict(low=((0 - probe.net.mean) / probe.net.std).expand_as(xn),
                     high=((1 - probe.net.mean) / probe.net.std).expand_as(xn))
    with Gradient(model=inner, composite=cls(canonizers=canonizers, **extra)) as attributor:
        logits = inner(xn)
        seed = torch.zeros_like(logits).scatter(1, targets[:, None], logits.gather(1, targets[:, None]))
        _, reference = attributor(xn, seed)
    ours, _ = lrp_relevance(probe, photo, targets, composite)
    assert reference.abs().sum() > 0
    torch.testing.assert_close(ours, reference, rtol=1e-3, atol=1e-4 * float(reference.abs().max()))


def test_lrp_on_torchvision_resnet_equals_zennits_resnet_canonizer():
    """Where Zennit ships a canonizer (torchvision ResNets) deepprobe's BatchNorm pairing finds the same merges."""
    from torchvision.models import resnet18
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    torch.manual_seed(0)
    net = resnet18(num_classes=5).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # trained-looking statistics, so the merge matters
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 2), m.bias.normal_(0, 0.1)
    net = fold_eps(net)
    probe = tiny_vits.bundle(net, spec="test:resnet18")
    x = torch.rand(2, 3, 64, 64)
    xn = (x - 0.5) / 0.5
    targets = net(xn).argmax(1)
    with Gradient(model=net, composite=EpsilonPlusFlat(canonizers=[ResNetCanonizer()])) as attributor:
        logits = net(xn)
        _, reference = attributor(xn, torch.zeros_like(logits).scatter(1, targets[:, None],
                                                                       logits.gather(1, targets[:, None])))
    ours, _ = lrp_relevance(probe, x, targets)
    torch.testing.assert_close(ours, reference, rtol=1e-3, atol=1e-4 * float(reference.abs().max()))


def test_lrp_conserves_through_timm_resnet_blocks():
    """timm's ResNet blocks add their shortcut with `+=` inside forward: the canonizer's rewrite must split it."""
    import timm

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=5).eval()
    with torch.no_grad():
        net.fc.bias.zero_()
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2)
    probe = tiny_vits.bundle(net, spec="timm:resnet18")
    x = torch.rand(2, 3, 64, 64)
    targets = probe.net(x).argmax(1)
    relevance, logits = lrp_relevance(probe, x, targets, "epsilon-gamma-box")
    ratio = relevance.sum((1, 2, 3)) / logits
    assert ((ratio - 1).abs() < 1e-3).all(), ratio


# ------------------------------------------------------------------------------------------ LRP: where it looks
def test_lrp_moves_to_the_half_that_holds_the_asked_class(lite0, cat, coffee):
    """cat|coffee and coffee|cat: the map of each class holds more of its mass on that class's half."""
    c, k = cat[..., 56:168], coffee[..., 56:168]
    collages = torch.cat([torch.cat([c, k], -1), torch.cat([k, c], -1)])
    cat_i, cup_i = lite0.class_index("Egyptian cat"), lite0.class_index("espresso")
    maps = explain(lite0, torch.cat([collages, collages]), "lrp", target=torch.tensor([cat_i, cat_i, cup_i, cup_i]))
    relevance_left = maps[..., :112].sum((1, 2)) / maps.sum((1, 2))
    cat_left, cup_left = relevance_left[:2], relevance_left[2:]
    assert cat_left[0] > cup_left[0] and cat_left[1] < cup_left[1], (cat_left, cup_left)


# ------------------------------------------------------------------------------------------ LRP: refusals
def test_lrp_names_what_it_does_not_cover(lite0):
    import timm

    vit = tiny_vits.bundle(tiny_vits.timm_twin(tiny_vits.torchvision_vit()))
    with pytest.raises(DeepprobeError, match="attention layers: use --method attnlrp"):
        explain(vit, torch.rand(1, 3, 32, 32), "lrp")
    se_net = tiny_vits.bundle(timm.create_model("efficientnet_b0", pretrained=False, num_classes=5).eval(),
                              spec="timm:efficientnet_b0")
    with pytest.raises(DeepprobeError, match=r"lrp does not cover SqueezeExcite \(blocks\.0\.0\.se"):
        explain(se_net, torch.rand(1, 3, 32, 32), "lrp")
    scripted = rebundle(lite0, torch.jit.trace(nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1),
                                                             nn.Flatten()), torch.rand(1, 3, 8, 8)))
    with pytest.raises(DeepprobeError, match="TorchScript"):
        explain(scripted, torch.rand(1, 3, 8, 8), "lrp", target=0)
    with pytest.raises(DeepprobeError, match="unknown LRP composite 'epsilon'"):
        explain(lite0, torch.rand(1, 3, 32, 32), "lrp", composite="epsilon")


# ------------------------------------------------------------------------------------------ AttnLRP
@pytest.fixture(scope="module")
def lxt_reference():
    """LXT's own AttnLRP of the tiny torchvision ViT (tiny_vits.lxt_reference: LXT's recipe, undone after)."""
    tv = tiny_vits.torchvision_vit()
    for p in tv.parameters():
        p.requires_grad_(False)
    torch.manual_seed(1)
    x = torch.rand(4, 3, tiny_vits.SIZE, tiny_vits.SIZE)
    targets = tv((x - 0.5) / 0.5).argmax(1)
    reference = tiny_vits.lxt_reference(tv, (x - 0.5) / 0.5, targets)
    assert nn.LayerNorm.forward.__module__ == "torch.nn.modules.normalization"  # LXT's class patches undone
    return tv, x, targets, reference


def test_attnlrp_equals_lxt_on_torchvision_timm_and_hugging_face_vits(lxt_reference):
    """One function in three layouts (torchvision, timm, Hugging Face): deepprobe's AttnLRP of each equals LXT's
    of the torchvision one. Plain gradient x input differs from it (the rules matter)."""
    tv, x, targets, reference = lxt_reference
    hf = tiny_vits.hf_twin(tv)
    hf_bundle = dataclasses.replace(tiny_vits.bundle(hf), net=Normalized(LogitsOf(hf), (0.5,) * 3, (0.5,) * 3))
    for probe in (tiny_vits.bundle(tv), tiny_vits.bundle(tiny_vits.timm_twin(tv)), hf_bundle):
        ours, logits = attnlrp_relevance(probe, x, targets)
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6 * float(reference.abs().max()))
        ours_left = [n for n, m in probe.net.named_modules() if {"forward", "original_forward"} & set(vars(m))
                     or any(getattr(h, "__module__", "").startswith(("zennit", "deepprobe", "lxt"))
                            for h in m._forward_hooks.values())]  # (transformers installs hooks of its own)
        assert not ours_left, ours_left  # patches and hooks undone
    xn = ((x - 0.5) / 0.5).requires_grad_(True)
    (grad,) = torch.autograd.grad(tv(xn).gather(1, targets[:, None]).sum(), xn)
    assert (xn * grad - reference).abs().max() > 0.5 * reference.abs().max()
    assert (nn.LayerNorm.forward.__module__, nn.GELU.forward.__module__) == ("torch.nn.modules.normalization",
                                                                            "torch.nn.modules.activation")


def test_attnlrp_refuses_a_cnn(lite0, cat):
    with pytest.raises(DeepprobeError, match="has no attention layers it knows: use --method lrp"):
        explain(lite0, cat, "attnlrp")


# ------------------------------------------------------------------------------------------ LeGrad
@pytest.mark.parametrize("first", [None, 1])
def test_legrad_equals_torchcam(first):
    from torchcam.methods import LeGrad

    from deepprobe.explain.legrad import legrad

    tv = tiny_vits.torchvision_vit()
    for p in tv.parameters():
        p.requires_grad_(False)
    torch.manual_seed(2)
    x = torch.rand(3, 3, tiny_vits.SIZE, tiny_vits.SIZE)
    targets = torch.tensor([0, 3, 4])
    ours = legrad(tiny_vits.bundle(tiny_vits.timm_twin(tv)), x, targets, layer=first)
    blocks = list(tv.encoder.layers)[first or 0:]  # default: the last 4 blocks, i.e. all 3 here
    with LeGrad(tv, blocks) as extractor:
        scores = tv((x - 0.5) / 0.5)
        reference = extractor(targets.tolist(), scores, normalized=False)[0]
    assert reference.abs().max() > 0
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_lrp_panel_with_a_composite_and_one_line_errors(tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    res = runner.invoke(app, ["explain", str(EXAMPLES / "cat.jpg"), "--method", "lrp", "--method", "gradcam",
                              "--composite", "epsilon-gamma-box", "--out", str(out), "--quiet", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    names = {p.name for p in out.iterdir()}
    assert {"cat_lrp_Egyptian_cat.npy", "cat_Egyptian_cat_panel.png"} <= names
    import json

    import numpy as np

    heat = np.load(out / "cat_lrp_Egyptian_cat.npy")
    assert heat.shape == (224, 224) and heat.min() >= 0 and heat.max() <= 1 and heat.std() > 0.01
    sidecar = json.loads((out / "cat_lrp_Egyptian_cat.json").read_text())
    assert sidecar["result"]["options"] == {"composite": "epsilon-gamma-box"}
    res = runner.invoke(app, ["explain", str(EXAMPLES / "cat.jpg"), "--method", "lrp", "--composite", "flat",
                              "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "--composite must be one of epsilon-plus-flat" in res.output
    assert len(res.output.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------ evaluate
def test_evaluate_scores_lrp_with_its_composite_beside_the_cams(lite0, small_photos):
    """`evaluate` scores LRP (with a composite given as a method option) beside Grad-CAM and Eigen-CAM; the LRP maps
    it scores are the maps `explain` gives."""
    import deepprobe as dp

    result = dp.evaluate(lite0, small_photos, methods=["lrp", "gradcam", "eigencam"], metrics=["deletion", "sparseness"],
                         method_options={"lrp": {"composite": "epsilon-gamma-box"}}, steps=2, baselines=False)
    for method in ("lrp", "gradcam", "eigencam"):
        scores = result.scores[method]
        assert scores["deletion"].values.shape == (2,) and torch.isfinite(scores["sparseness"].values).all()
    torch.testing.assert_close(result.maps["lrp"], explain(lite0, small_photos, "lrp", composite="epsilon-gamma-box"))
