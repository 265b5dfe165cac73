"""`deepprobe explain` for CNNs on the example photos with the bundled EfficientNet-Lite0: Grad-CAM follows the
asked class in a two-photo collage, equals captum's LayerGradCam and pytorch-grad-cam's Grad-CAM (and Grad-CAM++), batches
equal single images, every captum method gives (N,H,W) maps in [0,1], guided backprop really is guided on
ReLU6, ViT tokens are put back on the patch grid, and the CLI writes what it promises."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from deepprobe.cli import app
from deepprobe.errors import DeepprobeError
from deepprobe.explain import explain
from deepprobe.explain.attributions import GuidedReLU6, guided_relu6
from deepprobe.explain.cam import default_cam_layer, gradcam, gradcam_pp

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAST = {"ig": dict(steps=4), "smoothgrad": dict(samples=4), "occlusion": dict(window=56, stride=56)}


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.detach().flatten().double(), b.detach().flatten().double()]))[0, 1])


@pytest.fixture(scope="module")
def collages(cat, coffee):
    """cat|coffee and coffee|cat, each half the centre 112 columns of a 224 photo. The model calls both
    'Egyptian cat' (p~0.57) with espresso in its top 5, so a map must move with the *asked* class."""
    c, k = cat[..., 56:168], coffee[..., 56:168]
    return torch.cat([torch.cat([c, k], -1), torch.cat([k, c], -1)])


def left_share(maps: torch.Tensor) -> torch.Tensor:
    w = maps.shape[-1] // 2
    return maps[..., :w].sum((1, 2)) / maps.sum((1, 2))


# ------------------------------------------------------------------------------------------ where CAMs look
@pytest.mark.parametrize("method, least", [("gradcam", 0.8), ("gradcam++", 0.6)])
def test_cam_moves_to_the_half_that_holds_the_asked_class(lite0, collages, method, least):
    cat_on_left = torch.tensor([1.0, 0.0])
    for name in ("Egyptian cat", "espresso"):
        share = left_share(explain(lite0, collages, method, target=name))
        on_target = torch.where((cat_on_left == 1) == (name == "Egyptian cat"), share, 1 - share)
        assert (on_target > least).all(), (name, share)


@pytest.mark.parametrize("method", ["saliency", "ig", "smoothgrad", "occlusion", "guided-backprop"])
def test_attributions_put_more_mass_on_the_asked_class(lite0, collages, method):
    """Weaker than the CAM check (pixel maps are spread out), still one that a class-blind map fails."""
    cat_map = explain(lite0, collages, method, target="Egyptian cat", **FAST.get(method, {}))
    cup_map = explain(lite0, collages, method, target="espresso", **FAST.get(method, {}))
    cat_left, cup_left = left_share(cat_map), left_share(cup_map)
    assert cat_left[0] > cup_left[0] and cat_left[1] < cup_left[1], (cat_left, cup_left)


def test_default_layer_is_the_last_spatial_map(lite0, cat):
    assert default_cam_layer(lite0, cat) == "bn2"
    assert gradcam(lite0, cat, torch.tensor([285])).shape == (1, 7, 7)
    assert gradcam(lite0, cat, torch.tensor([285]), layer="blocks.4").shape == (1, 14, 14)


# ------------------------------------------------------------------------------------------ against references
@pytest.mark.parametrize("layer", ["bn2", "blocks.4"])
def test_gradcam_equals_captum_layergradcam(lite0, collages, layer):
    from captum.attr import LayerGradCam

    targets = torch.tensor([lite0.class_index("espresso"), lite0.class_index("Egyptian cat")])
    ours = gradcam(lite0, collages, targets, layer=layer)
    ref = LayerGradCam(lite0.net, lite0.layer(layer)).attribute(collages, target=targets, relu_attributions=True)
    for i in range(2):
        assert corr(ours[i], ref[i, 0]) > 0.999
    torch.testing.assert_close(ours, ref[:, 0], rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def photos(lite0):
    paths = sorted(EXAMPLES.glob("*.jpg"))
    assert len(paths) >= 5
    return torch.cat([lite0.load_image(p) for p in paths])


@pytest.mark.parametrize("layer", ["bn2", "blocks.4"])
def test_gradcam_equals_pytorch_grad_cam(lite0, photos, layer):
    """The same maps as pytorch-grad-cam's GradCAM on the example photos, at the layer's own resolution (theirs
    min-max scaled there, ours scaled the same way), for each photo's predicted class and for a fixed one.
    grad-cam is in the test extra: no skip when it is missing."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    predicted = lite0.predict(photos).argmax(1)
    for targets in (predicted, torch.full_like(predicted, lite0.class_index("espresso"))):
        ours = gradcam(lite0, photos, targets, layer=layer)
        with GradCAM(lite0.net, [lite0.layer(layer)]) as ref_cam:
            ref_cam.get_target_width_height = lambda x, size=ours.shape[-1]: (size, size)  # no resize
            ref = ref_cam(photos.clone().requires_grad_(), [ClassifierOutputTarget(int(t)) for t in targets])
        flat = ours.flatten(1)
        flat = flat - flat.min(1, keepdim=True).values
        scaled = (flat / (1e-7 + flat.max(1, keepdim=True).values)).view_as(ours)  # their scale_cam_image
        assert ref.shape == tuple(ours.shape) and (ours.flatten(1).amax(1) > 0).all()
        torch.testing.assert_close(scaled, torch.from_numpy(ref), rtol=1e-4, atol=1e-4)


def test_gradcam_pp_equals_pytorch_grad_cam(lite0, collages):
    import pytorch_grad_cam as pgc  # in the test extra: fail, never skip, when it is missing
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [lite0.class_index("espresso"), lite0.class_index("tabby")]
    with pgc.GradCAMPlusPlus(lite0.net, [lite0.layer("bn2")]) as ref_cam:
        ref = torch.from_numpy(ref_cam(collages.clone().requires_grad_(), [ClassifierOutputTarget(t) for t in targets]))
    ours = explain(lite0, collages, "gradcam++", target=torch.tensor(targets))
    for i in range(2):
        assert corr(ours[i], ref[i]) > 0.99  # they min-max before their resize, we after: not bit-equal


def test_gradcam_pp_differs_from_gradcam(lite0, collages):
    """Both land on the object (test above), but weigh channels differently: the maps are not the same."""
    t = torch.tensor([lite0.class_index("espresso")] * 2)
    a, b = gradcam(lite0, collages, t), gradcam_pp(lite0, collages, t)
    for i in range(2):
        assert corr(a[i], b[i]) < 0.95 and (a[i] / a[i].max() - b[i] / b[i].max()).abs().max() > 0.2


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "saliency", "guided-backprop"])
def test_a_batch_equals_single_images(lite0, cat, coffee, method):
    both = explain(lite0, torch.cat([cat, coffee]), method)
    singles = torch.cat([explain(lite0, cat, method), explain(lite0, coffee, method)])
    torch.testing.assert_close(both, singles, atol=2e-4, rtol=1e-3)


# ------------------------------------------------------------------------------------------ captum methods
@pytest.mark.parametrize("method", ["saliency", "ig", "smoothgrad", "occlusion", "guided-backprop"])
def test_captum_methods_give_maps_in_unit_range(lite0, cat, coffee, method):
    x = F.interpolate(torch.cat([cat, coffee]), size=(96, 112), mode="area")
    maps = explain(lite0, x, method, **{**FAST.get(method, {}), **(dict(window=24, stride=24) if method == "occlusion" else {})})
    assert maps.shape == (2, 96, 112) and torch.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1 and (maps.flatten(1).std(1) > 0.05).all()


def test_guided_relu6_passes_only_positive_gradients_inside_the_linear_range():
    x = torch.tensor([-1.0, 3.0, 3.0, 7.0], requires_grad=True)
    GuidedReLU6()(x).backward(torch.tensor([1.0, 1.0, -1.0, 1.0]))
    assert x.grad.tolist() == [0.0, 1.0, 0.0, 0.0]


def test_guided_backprop_is_guided_on_relu6(lite0, cat):
    """captum's GuidedBackprop overrides nn.ReLU only: on Lite0 (ReLU6) it returns the plain gradient;
    ours swaps ReLU6 for a guided one while it runs, and puts the originals back."""
    from captum.attr import GuidedBackprop, Saliency

    t = torch.tensor([lite0.class_index("Egyptian cat")])
    plain = Saliency(lite0.net).attribute(cat.clone().requires_grad_(), target=t, abs=False)
    captum_only = GuidedBackprop(lite0.net).attribute(cat.clone().requires_grad_(), target=t)
    torch.testing.assert_close(captum_only, plain)  # why the swap is needed
    with guided_relu6(lite0.net) as swapped:
        assert swapped > 0
    assert not any(isinstance(m, GuidedReLU6) for m in lite0.net.modules())
    guided, sal = explain(lite0, cat, "guided-backprop", target=t), explain(lite0, cat, "saliency", target=t)
    assert corr(guided, sal) < 0.9


# ------------------------------------------------------------------------------------------ vision transformers
def _tiny_vit(**arch):
    from timm.models.vision_transformer import VisionTransformer

    from deepprobe.models.bundle import ModelBundle
    from deepprobe.models.preprocess import Normalized, Preprocess

    torch.manual_seed(0)
    net = Normalized(VisionTransformer(img_size=32, patch_size=8, num_classes=4, embed_dim=32, depth=2,
                                       num_heads=4, mlp_ratio=2, **arch), (0.5,) * 3, (0.5,) * 3).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return ModelBundle(net=net, labels=["a", "b", "c", "d"], spec="test:vit", device=torch.device("cpu"),
                       preprocess=Preprocess(crop=(32, 32), resize=None, mean=(0.5,) * 3, std=(0.5,) * 3))


@pytest.mark.parametrize("arch, prefix", [({}, 1), ({"reg_tokens": 4}, 5)])
def test_vit_tokens_go_back_on_the_patch_grid(arch, prefix):
    vit = _tiny_vit(**arch)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 1, 2])
    assert default_cam_layer(vit, x) == "blocks.1.norm1"
    raw = gradcam(vit, x, t)
    assert raw.shape == (3, 4, 4)
    # hand computation: drop the prefix tokens, weights = mean gradient over patches, patches row by row
    seen = {}
    h = vit.layer("blocks.1.norm1").register_forward_hook(lambda m, i, o: seen.update(a=o))
    with torch.enable_grad():
        xi = x.clone().requires_grad_()
        logits = vit.net(xi)
        (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), seen["a"])
    h.remove()
    a, g = seen["a"][:, prefix:].detach(), g[:, prefix:]
    expected = torch.einsum("nc,ntc->nt", g.mean(1), a).clamp(min=0).view(3, 4, 4)
    torch.testing.assert_close(raw, expected, rtol=1e-4, atol=1e-6)
    assert explain(vit, x, "gradcam++").shape == (3, 32, 32)


def test_layer_errors(lite0, cat):
    with pytest.raises(DeepprobeError, match="unknown layer"):
        explain(lite0, cat, "gradcam", layer="blocks.99")
    with pytest.raises(DeepprobeError, match="not a \\(N,C,H,W\\) map"):
        explain(lite0, cat, "gradcam", layer="classifier")
    with pytest.raises(DeepprobeError, match="does not apply"):
        explain(lite0, cat, "saliency", layer="bn2")
    with pytest.raises(DeepprobeError, match="unknown explanation method"):
        explain(lite0, cat, "gradcam+++")


# ------------------------------------------------------------------------------------------ the CLI
def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result, (json.loads(result.stdout) if "--json" in args and result.exit_code == 0 else None)


def test_cli_end_to_end(tmp_path):
    result, summary = _cli("explain", str(EXAMPLES / "cat.jpg"), str(EXAMPLES / "coffee.jpg"),
                           "--method", "gradcam", "--method", "saliency", "--target", "espresso", "--target", "tabby",
                           "--batch-size", "2", "--json", "--out", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert summary["cam_layer"] == "bn2" and summary["methods"] == ["gradcam", "saliency"]
    assert len(summary["results"]) == 4  # 2 photos x 2 targets
    outputs = {Path(p).name for p in summary["outputs"]}
    for stem in ("cat", "coffee"):
        for cls in ("espresso", "tabby"):
            assert {f"{stem}_{cls}_panel.png", f"{stem}_gradcam_{cls}.png", f"{stem}_gradcam_{cls}.npy",
                    f"{stem}_gradcam_{cls}.json", f"{stem}_saliency_{cls}.png"} <= outputs
    assert all(Path(p).exists() for p in summary["outputs"])
    r = next(r for r in summary["results"] if r["input"].endswith("coffee.jpg") and r["class"] == "espresso")
    assert r["probability"] > 0.8 and r["predicted"] == "espresso"
    heat = np.load(r["methods"]["gradcam"]["map"])
    assert heat.shape == (224, 224) and heat.min() >= 0 and heat.max() <= 1
    sidecar = json.loads(Path(r["methods"]["gradcam"]["overlay"]).with_suffix(".json").read_text())
    assert sidecar["command"] == "explain" and sidecar["result"]["layer"] == "bn2"
    assert sidecar["result"]["class"] == "espresso"
    from PIL import Image
    with Image.open(r["panel"]) as im:
        assert im.width > 3 * 224  # input | gradcam | saliency


def test_cli_default_target_is_the_predicted_class(tmp_path):
    result, summary = _cli("explain", str(EXAMPLES / "coffee.jpg"), "--method", "gradcam++", "--layer", "blocks.5",
                           "--json", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    (r,) = summary["results"]
    assert r["class"] == r["predicted"] == "espresso" and r["target_is_predicted"]
    assert Path(tmp_path / "coffee_gradcampp_espresso.png").exists() and "panel" not in r
    assert r["methods"]["gradcam++"]["layer"] == "blocks.5"


@pytest.mark.parametrize("args, message", [
    (["--method", "gradcum"], "unknown explanation method"),
    (["--layer", "blocks.99"], "unknown layer"),
    (["--target", "ostrichh"], "ostrich"),
    (["--method", "ig", "--steps", "1"], "--steps"),
    (["--method", "saliency", "--layer", "bn2"], "--layer applies to"),
    (["--method", "gradcam", "--method", "attention", "--layer", "bn2"], "run them as separate commands"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    result, _ = _cli("explain", str(EXAMPLES / "cat.jpg"), *args, "--out", str(tmp_path))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


def test_cli_on_a_vit_with_attention_heads(tmp_path, monkeypatch):
    """CAMs and attention methods side by side on a (tiny, random) timm ViT given as user code."""
    (tmp_path / "tiny_vit_model.py").write_text(
        "import torch\nfrom timm.models.vision_transformer import VisionTransformer\n\n"
        "def tiny():\n    torch.manual_seed(0)\n"
        "    return VisionTransformer(img_size=224, patch_size=32, num_classes=4, embed_dim=32, depth=2, "
        "num_heads=2, mlp_ratio=2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    result, summary = _cli("explain", str(EXAMPLES / "cat.jpg"), "--model", "python:tiny_vit_model:tiny",
                           "--method", "gradcam", "--method", "rollout", "--method", "attention",
                           "--json", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert summary["cam_layer"] == "blocks.1.norm1"
    panel_record, heads_record = summary["results"]
    assert set(panel_record["methods"]) == {"gradcam", "rollout", "attention"}
    assert heads_record["heads"] == 2 and Path(heads_record["attention_heads"]).exists()
    assert np.load(panel_record["methods"]["rollout"]["map"]).shape == (224, 224)
