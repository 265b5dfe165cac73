"""Every model spec of the contract loads a model the tests build themselves, and gives the same logits."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

import deepprobe as dp
from deepprobe.errors import DeepprobeError


def tiny_cnn(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, classes)).eval()


def test_bundled_lite1_and_lite2_classify_the_espresso(examples):
    for spec, size in [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)]:
        probe = dp.load_model(spec, device="cpu")
        x = probe.load_image(examples / "coffee.jpg")
        assert tuple(x.shape) == (1, 3, size, size)
        assert probe.class_name(int(probe.predict(x).argmax())) == "espresso"


@pytest.mark.parametrize("spec", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_bundled_models_are_timms_tf_efficientnet_lite(spec, examples):
    """The bundled nets are built without importing timm (seconds of start-up), yet are timm's tf_efficientnet_lite*:
    the same module tree, the bundled weights mapped in the same order, the same logits bit for bit, at the crop
    size and at another one (TF "same" padding depends on it). The bundle normalizes inside: (x - 0.5) / 0.5."""
    import importlib

    import timm

    from deepprobe.models.sources import BUNDLED
    from deepprobe.models.weights import map_in_order, read_state_dict

    probe = dp.load_model(spec, device="cpu")
    reference = timm.create_model("tf_" + spec, pretrained=False).eval()
    module_name, class_name, _ = BUNDLED[spec]
    map_in_order(reference, read_state_dict(getattr(importlib.import_module(module_name), class_name)
                                            .get_model_file_path()), spec)
    inner = probe.inner
    assert [(n, type(m).__name__) for n, m in inner.named_modules()] == \
        [(n, type(m).__name__) for n, m in reference.named_modules()]
    x = probe.load_image(examples / "cat.jpg")
    other = torch.nn.functional.interpolate(x, size=(201, 262), mode="bilinear")
    with torch.no_grad():
        for image in (x, other):
            assert torch.equal(inner((image - 0.5) / 0.5), reference((image - 0.5) / 0.5))
        assert torch.allclose(probe.net(x), inner((x - 0.5) / 0.5), atol=1e-5)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_spec_with_a_local_weights_file(tmp_path, suffix):
    import timm

    net = timm.create_model("resnet10t", pretrained=False, num_classes=7).eval()
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(net.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file(net.state_dict(), str(path))
    probe = dp.load_model("timm:resnet10t", weights=path, device="cpu")
    assert probe.labels is None and probe.num_classes == 7  # the head is sized from the weights file
    x = torch.rand(2, 3, 64, 64)
    cfg = timm.data.resolve_data_config({}, model=net)
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(probe.net(x), net((x - mean) / std), atol=1e-5)


def test_weights_that_do_not_fit_name_the_first_mismatched_key(tmp_path):
    import timm

    state = timm.create_model("resnet10t", pretrained=False).state_dict()
    state["conv1.0.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(DeepprobeError, match="conv1.0.weight"):
        dp.load_model("timm:resnet10t", weights=tmp_path / "bad.pth", device="cpu")
    torch.save({"not": "tensors"}, tmp_path / "junk.pth")
    with pytest.raises(DeepprobeError):
        dp.load_model("timm:resnet10t", weights=tmp_path / "junk.pth", device="cpu")


def test_weights_are_never_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"w": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(DeepprobeError, match="cannot read weights"):
        dp.load_model("timm:resnet10t", weights=tmp_path / "evil.pth", device="cpu")


def test_torchvision_spec(tmp_path):
    import torchvision

    net = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=3).eval()
    torch.save(net.state_dict(), tmp_path / "mnv3.pth")
    probe = dp.load_model("torchvision:mobilenet_v3_small", weights=tmp_path / "mnv3.pth", device="cpu")
    x = torch.rand(1, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(probe.net(x), net((x - mean) / std), atol=1e-5)


def test_torchscript_and_onnx_specs(tmp_path):
    net = tiny_cnn()
    torch.jit.script(net).save(str(tmp_path / "m.pt"))
    torch.onnx.export(net, torch.rand(1, 3, 32, 32), str(tmp_path / "m.onnx"), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}}, opset_version=17)
    x = torch.rand(3, 3, 32, 32)
    for spec in (f"torchscript:{tmp_path / 'm.pt'}", f"onnx:{tmp_path / 'm.onnx'}"):
        probe = dp.load_model(spec, device="cpu")
        with torch.no_grad():
            assert torch.allclose(probe.net(x), net(x), atol=1e-5), spec
    assert dp.load_model(f"onnx:{tmp_path / 'm.onnx'}", device="cpu").input_size == (32, 32)
    (tmp_path / "garbage.pt").write_bytes(b"not a model")
    with pytest.raises(DeepprobeError, match="garbage.pt"):
        dp.load_model(f"torchscript:{tmp_path / 'garbage.pt'}", device="cpu")
    with pytest.raises(DeepprobeError, match="not found"):
        dp.load_model(f"onnx:{tmp_path / 'missing.onnx'}", device="cpu")


def test_hugging_face_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, num_labels=3,
                                 id2label={0: "left", 1: "middle", 2: "right"}, label2id={"left": 0, "middle": 1, "right": 2})
    torch.manual_seed(0)
    net = transformers.ViTForImageClassification(cfg).eval()
    net.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    probe = dp.load_model(f"hf:{tmp_path}", device="cpu")
    assert probe.labels == ["left", "middle", "right"] and probe.input_size == (32, 32)
    assert probe.class_index("middle") == 1
    with pytest.raises(DeepprobeError, match='did you mean "middle"'):
        probe.class_index("midle")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(probe.net(x), net(pixel_values=(x - 0.5) / 0.5).logits, atol=1e-5)
    with pytest.raises(DeepprobeError, match="config.json"):
        dp.load_model(f"hf:{tmp_path / 'nope'}", device="cpu")


def test_python_spec_runs_user_code(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def small():
            torch.manual_seed(1)
            return nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 4))

        def not_a_module():
            return 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = dp.load_model("python:my_models:small", device="cpu")
    assert probe.num_classes == 4
    assert probe.net(torch.rand(1, 3, 40, 40)).shape == (1, 4)
    with pytest.raises(DeepprobeError, match="not a torch.nn.Module"):
        dp.load_model("python:my_models:not_a_module", device="cpu")
    with pytest.raises(DeepprobeError, match="cannot import"):
        dp.load_model("python:no_such_module_xyz:f", device="cpu")


def test_unknown_specs_are_clear_errors():
    with pytest.raises(DeepprobeError, match="unknown model spec"):
        dp.load_model("efficientnet_lite9", device="cpu")
    with pytest.raises(DeepprobeError, match="unknown model kind"):
        dp.load_model("keras:foo", device="cpu")
    with pytest.raises(DeepprobeError, match="unknown timm model"):
        dp.load_model("timm:resnet_nope", device="cpu")


def test_class_names_typos_and_indices(lite0):
    assert lite0.class_index("ostrich") == 9
    assert lite0.class_index(9) == 9 and lite0.class_index("9") == 9
    with pytest.raises(DeepprobeError, match='did you mean.*"ostrich"'):
        lite0.class_index("ostrch")
    with pytest.raises(DeepprobeError, match="out of range"):
        lite0.class_index(1000)


def test_layers_by_dotted_name(lite0):
    assert isinstance(lite0.layer("blocks.6"), nn.Module)
    with pytest.raises(DeepprobeError, match="unknown layer"):
        lite0.layer("blocks.66")


def test_an_image_at_the_input_size_is_taken_as_it_is(lite0, tmp_path, cat):
    from deepprobe.io import save_png

    path = save_png(cat[0], tmp_path / "exact.png")
    again = lite0.load_image(path)
    assert again.shape == cat.shape
    assert (again - cat).abs().max() <= 0.5 / 255 + 1e-6  # only 8-bit rounding, no resampling


def test_cuda_request_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeepprobeError, match="no CUDA GPU"):
        dp.load_model("efficientnet_lite0", device="cuda")


def test_assumed_imagenet_names_are_said_on_stderr_and_in_the_sidecar(tmp_path, examples, monkeypatch):
    """A user's 1000-way network without names gets ImageNet's, and every output says they were assumed; with
    `labels` in its module nothing is assumed."""
    from typer.testing import CliRunner

    from deepprobe.cli import app

    for name, extra in (("thousand", ""), ("named", "labels = [f'c{i}' for i in range(1000)]\n")):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
            import torch
            def build():
                return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, 1000))
            """) + extra)
    monkeypatch.syspath_prepend(str(tmp_path))
    res = CliRunner().invoke(app, ["classify", str(examples / "cat.jpg"), "--model", "python:thousand:build",
                                   "--json", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "assumed ImageNet" in res.stderr and "assumed ImageNet" in json.loads(res.stdout)["labels"]
    res = CliRunner().invoke(app, ["classify", str(examples / "cat.jpg"), "--model", "python:named:build",
                                   "--json", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "assumed" not in res.stderr and json.loads(res.stdout)["labels"] is None
    assert json.loads(res.stdout)["results"][0]["top"][0]["class"].startswith("c")
