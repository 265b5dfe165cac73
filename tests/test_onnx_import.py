"""`--model onnx:FILE` on files PyTorch's own exporters write (TorchScript and dynamo, opset 17 and 18).

timm's small test ResNet (random weights, 10 classes, 64 px; the same blocks as a ResNet-18) is exported in
the test; the converted model must give onnxruntime's logits on real photos, take batches (also from a graph
exported for one image), and pass gradients to the input.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import deepprobe as dp

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SIZE = 64


def _timm(name: str):
    timm = pytest.importorskip("timm")
    return timm.create_model(name, pretrained=False, num_classes=10).eval()


@pytest.fixture(scope="module")
def resnet():
    net = _timm("test_resnet")
    with torch.no_grad():  # timm zero-initialises each block's last BN: give every block some weight
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(0))
    return net


def _export(net, folder: Path, opset: int | None, dynamo: bool, dynamic_batch: bool = False) -> Path:
    if dynamo and importlib.util.find_spec("onnxscript") is None:
        pytest.skip("the dynamo exporter needs onnxscript (pip install '.[test]')")
    path = folder / f"net_opset{opset}_{'dynamo' if dynamo else 'torchscript'}{'_batch' if dynamic_batch else ''}.onnx"
    extra = {"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamic_batch else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(2 if dynamic_batch else 1, 3, SIZE, SIZE),), str(path),
                          opset_version=opset, dynamo=dynamo, **extra)
    return path


def _onnxruntime(path: Path, x: torch.Tensor, one_at_a_time: bool = True) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    parts = [x[i:i + 1] for i in range(x.shape[0])] if one_at_a_time else [x]
    return np.concatenate([session.run(None, {name: p.numpy()})[0] for p in parts])


def _ops(path: Path) -> set[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {f"{n.op_type}-{model.opset_import[0].version}" for n in model.graph.node}


def _converts_and_matches(path: Path, net: torch.nn.Module, fixed_batch: bool) -> None:
    """Logits of photos as onnxruntime's (and the source network's), a batch of 3, gradients to the input."""
    probe = dp.load_model(f"onnx:{path}", device="cpu")
    assert probe.input_size == (SIZE, SIZE)
    x = torch.cat([probe.load_image(EXAMPLES / name) for name in ("cat.jpg", "coffee.jpg", "rocket.jpg")])
    with torch.no_grad():
        logits = probe.net(x)  # a batch of 3, also through a graph exported for one image
    expected = _onnxruntime(path, x, one_at_a_time=fixed_batch)
    assert logits.shape == (3, 10)
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-3, atol=1e-4 * float(np.abs(expected).max()))
    with torch.no_grad():
        np.testing.assert_allclose(logits.numpy(), net(x).numpy(), rtol=1e-3, atol=1e-4 * float(np.abs(expected).max()))
    x = x.clone().requires_grad_(True)
    probe.net(x)[:, 3].sum().backward()
    assert x.grad is not None and bool((x.grad.abs().flatten(1).sum(1) > 0).all())


@pytest.mark.parametrize("opset", [17, 18])
def test_torchscript_exporter_files_convert_and_match_onnxruntime(resnet, tmp_path, opset):
    path = _export(resnet, tmp_path, opset, dynamo=False)
    # What made these fail before: folded weights shared through Identity nodes, not initializers.
    assert f"Identity-{opset}" in _ops(path)
    _converts_and_matches(path, resnet, fixed_batch=True)


@pytest.mark.slow
@pytest.mark.parametrize("opset", [17, 18])  # the dynamo exporter writes opset 18 when asked for 17
def test_dynamo_exporter_files_convert_and_match_onnxruntime(resnet, tmp_path, opset):
    path = _export(resnet, tmp_path, opset, dynamo=True)
    # What made these fail before: ReduceMean-18 with its axes as an input, Reshape with allowzero and the
    # batch of 1 baked into its shape.
    assert "ReduceMean-18" in _ops(path)
    _converts_and_matches(path, resnet, fixed_batch=True)


@pytest.mark.slow
def test_dynamo_export_with_a_dynamic_batch_of_a_vit(tmp_path):
    vit = _timm("test_vit")
    path = _export(vit, tmp_path, None, dynamo=True, dynamic_batch=True)
    assert {"Gelu-20", "Shape-20"} <= _ops(path)  # opset 20: Gelu, Shape-19 and Reshape-19
    _converts_and_matches(path, vit, fixed_batch=False)


def test_a_conversion_that_computes_something_else_is_refused(resnet, tmp_path, monkeypatch):
    import onnx2torch

    path = _export(resnet, tmp_path, 17, False)
    real = onnx2torch.convert

    def wrong(model):
        net = real(model)
        with torch.no_grad():
            next(p for p in net.parameters() if p.dim() == 4).mul_(1.5)  # the first conv, scaled
        return net
    monkeypatch.setattr(onnx2torch, "convert", wrong)
    with pytest.raises(dp.DeepprobeError, match="disagrees with onnxruntime"):
        dp.load_model(f"onnx:{path}", device="cpu")


def test_cli_classifies_with_an_exported_model(resnet, tmp_path):
    import json

    from typer.testing import CliRunner

    from deepprobe.cli import app

    path = _export(resnet, tmp_path, 17, False)
    result = CliRunner().invoke(app, ["classify", str(EXAMPLES / "cat.jpg"), str(EXAMPLES / "coffee.jpg"),
                                      "--model", f"onnx:{path}", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["results"]
    probe = dp.load_model(f"onnx:{path}", device="cpu")
    for row, name in zip(rows, ("cat.jpg", "coffee.jpg")):
        expected = _onnxruntime(path, probe.load_image(EXAMPLES / name))[0]
        assert row["top"][0]["index"] == int(expected.argmax()), row
