"""The rest of the CAM family (XGrad-CAM, Layer-CAM, Eigen-CAM, Score-CAM, Ablation-CAM, FullGrad) against
pytorch-grad-cam on the example photos with the bundled model, plus properties wrong code fails.

grad-cam is in the test extra: these tests fail, never skip, when it is missing.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from deepprobe.errors import DeepprobeError
from deepprobe.explain import explain
from deepprobe.explain.cam import eigencam, layer_output, principal_projection

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.detach().flatten().double(), b.detach().flatten().double()]))[0, 1])


@pytest.fixture(scope="module")
def photos(lite0):
    paths = sorted(EXAMPLES.glob("*.jpg"))
    assert len(paths) >= 5
    return torch.cat([lite0.load_image(p) for p in paths])


@pytest.fixture(scope="module")
def small(photos):
    """Two photos at 128 px: the per-channel CAMs make one forward pass per channel and photo."""
    return torch.nn.functional.interpolate(photos[:2], size=128, mode="bilinear", antialias=True).clamp(0, 1)


def reference(cam_class, net, layers, x, targets, **kwargs) -> torch.Tensor:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with cam_class(net, layers, **kwargs) as cam:
        if hasattr(cam, "batch_size"):
            cam.batch_size = 16
        return torch.from_numpy(cam(x.clone().requires_grad_(), [ClassifierOutputTarget(int(t)) for t in targets]))


@pytest.mark.parametrize("method, cls", [("xgradcam", "XGradCAM"), ("layercam", "LayerCAM"), ("eigencam", "EigenCAM")])
def test_one_pass_cams_equal_pytorch_grad_cam(lite0, photos, method, cls):
    """On all five example photos, each one's predicted class, at the default layer (bn2)."""
    import pytorch_grad_cam as pgc

    targets = lite0.predict(photos).argmax(1)
    ours = explain(lite0, photos, method, target=targets)
    ref = reference(getattr(pgc, cls), lite0.net, [lite0.layer("bn2")], photos, targets)
    for i in range(len(photos)):
        assert corr(ours[i], ref[i]) > 0.98, (method, i)


@pytest.mark.parametrize("method, cls", [("scorecam", "ScoreCAM"), ("ablationcam", "AblationCAM")])
def test_per_channel_cams_equal_pytorch_grad_cam(lite0, small, method, cls):
    """At a 32-channel layer (after a ReLU6, where pytorch-grad-cam's ablation is a zero too), in batches smaller
    than the channel count, so the batching is exercised."""
    import pytorch_grad_cam as pgc

    layer = "blocks.0.0.bn1"
    targets = lite0.predict(small).argmax(1)
    ours = explain(lite0, small, method, target=targets, layer=layer, internal_batch=12)
    ref = reference(getattr(pgc, cls), lite0.net, [lite0.layer(layer)], small, targets)
    for i in range(len(small)):
        assert corr(ours[i], ref[i]) > 0.98, (method, i)


def _plain_batchnorms(net: nn.Module) -> nn.Module:
    """A copy with each timm BatchNormAct2d as nn.Sequential(nn.BatchNorm2d, its activation): the same function,
    in the layer types pytorch-grad-cam's FullGrad looks for (exactly nn.Conv2d and nn.BatchNorm2d)."""
    net = copy.deepcopy(net)
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ == "BatchNormAct2d":
                bn = nn.BatchNorm2d(child.num_features, eps=child.eps).eval()
                bn.load_state_dict({k: v for k, v in child.state_dict().items() if k in bn.state_dict()})
                setattr(parent, name, nn.Sequential(bn, child.act))
    return net


def test_fullgrad_equals_pytorch_grad_cam(lite0, small):
    import pytorch_grad_cam as pgc

    targets = lite0.predict(small).argmax(1)
    ours = explain(lite0, small, "fullgrad", target=targets)
    twin = _plain_batchnorms(lite0.net)
    torch.testing.assert_close(twin(small), lite0.net(small))
    ref = reference(pgc.FullGrad, twin, [], small, targets)
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=1e-3)
    # on the unconverted model pytorch-grad-cam finds no bias layer at all (Lite0's are BatchNormAct2d): its map
    # is then the input-gradient term alone, which ours is not
    bare = reference(pgc.FullGrad, lite0.net, [], small, targets)
    assert (bare - ours).abs().max() > 0.1


def test_eigencam_of_a_constant_image_is_flat(lite0):
    """A grey image gives the same activations at every position but near the zero padding of the borders, so the
    map is one constant value inside (the borders, which do differ, take the rest of the range). A projection
    that mixes channels and positions when it flattens them, or reads another component, is not flat inside; a
    layer that is the same everywhere gives an all-zero map."""
    grey = torch.full((1, 3, 224, 224), 0.5)
    acts = layer_output(lite0, grey, "blocks.1")  # 56 x 56
    assert (acts[..., 8:-8, 8:-8].amax((-2, -1)) - acts[..., 8:-8, 8:-8].amin((-2, -1))).abs().max() < 1e-5
    assert (acts.amax((-2, -1)) - acts.amin((-2, -1))).max() > 0.1  # the borders differ
    maps = explain(lite0, grey, "eigencam", layer="blocks.1")  # scaled to [0,1] at 224 px
    inside = maps[0, 40:-40, 40:-40]
    assert maps.max() == 1 and float(inside.max() - inside.min()) < 1e-3
    raw = eigencam(lite0, grey, layer="blocks.1")
    assert float(raw[0, 8:-8, 8:-8].std()) < 1e-4 * float(raw.abs().max())
    torch.testing.assert_close(principal_projection(torch.ones(2, 5, 4, 4)), torch.zeros(2, 4, 4))


def test_eigencam_is_the_same_for_every_class(lite0, photos):
    a = explain(lite0, photos[:2], "eigencam", target="espresso")
    b = explain(lite0, photos[:2], "eigencam")
    torch.testing.assert_close(a, b)


def test_new_cams_move_with_the_asked_class(lite0, cat, coffee):
    """cat|coffee and coffee|cat: each class's map holds more of its mass on that class's half."""
    c, k = cat[..., 56:168], coffee[..., 56:168]
    collages = torch.cat([torch.cat([c, k], -1), torch.cat([k, c], -1)])
    cat_i, cup_i = lite0.class_index("Egyptian cat"), lite0.class_index("espresso")
    both = torch.cat([collages, collages])
    targets = torch.tensor([cat_i, cat_i, cup_i, cup_i])
    for method in ("xgradcam", "layercam", "fullgrad"):
        maps = explain(lite0, both, method, target=targets)
        left = maps[..., :112].sum((1, 2)) / maps.sum((1, 2))
        assert left[0] > left[2] and left[1] < left[3], (method, left)


def test_per_channel_cams_refuse_bad_batches(lite0, cat):
    with pytest.raises(DeepprobeError, match=r"internal_batch must be in \[1, inf\), got 0"):
        explain(lite0, cat, "scorecam", internal_batch=0)
    with pytest.raises(DeepprobeError, match="fullgrad sums every layer"):
        explain(lite0, cat, "fullgrad", layer="bn2")


# ------------------------------------------------------------------------------------------ detectors, segmenters
def test_new_methods_on_the_tiny_segmenter_and_detector(tiny_tasks):
    """Segmenter: each map of the square class puts more mass inside the square than elsewhere. Detector: a map
    per box, and LRP is refused in one line (Zennit has no rules for region proposals and RoI heads)."""
    import deepprobe as dp
    from tests.tiny_tasks import two_shapes

    det_path, seg_path = tiny_tasks
    seg = dp.load_model("python:tests.tiny_tasks:segmenter", weights=str(seg_path), device="cpu")
    det = dp.load_model("python:tests.tiny_tasks:detector", weights=str(det_path), device="cpu")
    x, *_ = two_shapes()
    x = x if x.dim() == 4 else x[None]
    square = dp.segment(seg, x)[0].mask == seg.class_index("square")
    assert square.any()
    for method in ("lrp", "xgradcam", "layercam", "eigencam", "scorecam", "fullgrad"):
        maps = explain(seg, x, method, target="square")
        assert maps.shape == (1, 64, 64)
        inside, outside = maps[0][square].mean(), maps[0][~square].mean()
        assert inside > outside, (method, float(inside), float(outside))
    boxes = explain(det, x, "eigencam")[0]
    assert len(boxes.detections.boxes) >= 1 and boxes.maps.shape[0] == len(boxes.detections.boxes)
    with pytest.raises(DeepprobeError, match=r"lrp does not cover FasterRCNN \(python:tests.tiny_tasks:detector\)"):
        explain(det, x, "lrp")
