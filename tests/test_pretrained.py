"""Pretrained weights by name, with the network blocked: each test fills a temporary HF_HOME / TORCH_HOME in the
libraries' own cache layout with weights it makes from the architecture (random tensors, so a loaded tensor can
only equal the file's if the file was read), then loads the name. Empty caches give one line naming the model,
the folder looked in and --weights; random weights come only from --random-init and are named in every output."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import deepprobe as dp
from deepprobe.cli import app
from deepprobe.errors import DeepprobeError
from deepprobe.models.labels import imagenet_labels

TIMM = "test_resnet.r160_in1k"  # timm's own test network with published weights: 0.5 M parameters
CAT = "examples/cat.jpg"


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty HF and torch caches in tmp_path; downloads not switched off by the environment."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("HF_HUB_CACHE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # set (not deleted) so teardown undoes --offline's "1"
        monkeypatch.setenv(name, "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return tmp_path


def _random_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every float tensor redrawn (variances kept positive), so only a read of the file reproduces them."""
    torch.manual_seed(3)

    def draw(key: str, value: torch.Tensor) -> torch.Tensor:
        if not value.is_floating_point():
            return value.clone()
        return torch.rand_like(value) + 0.5 if key.endswith("running_var") else torch.randn_like(value) * 0.1

    return {k: draw(k, v) for k, v in net.state_dict().items()}


def hub_snapshot(root: Path, repo: str, commit: str = "0123abcd") -> Path:
    """The folder the hub client keeps a repository's snapshot in: models--ORG--NAME/{refs/main, snapshots/HASH}."""
    repo_dir = root / "hf" / "hub" / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def fill_timm(root: Path, name: str = TIMM, safetensors: bool = True) -> dict[str, torch.Tensor]:
    import timm
    from safetensors.torch import save_file

    state = _random_state(timm.create_model(name, pretrained=False))
    snapshot = hub_snapshot(root, f"timm/{name}")
    if safetensors:
        save_file(state, str(snapshot / "model.safetensors"))
    else:
        torch.save(state, snapshot / "pytorch_model.bin")
    return state


def fill_torchvision(root: Path, name: str, member: str) -> dict[str, torch.Tensor]:
    import torchvision

    weights = torchvision.models.get_model_weights(name)[member]
    extra = {"weights_backbone": None} if "lraspp" in name else {}  # the builder would fetch ImageNet weights
    state = _random_state(torchvision.models.get_model(name, weights=None,
                                                       num_classes=len(weights.meta["categories"]), **extra))
    folder = root / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / os.path.basename(weights.url))
    return state


def _same(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = net.state_dict()
    return set(own) == set(state) and all(torch.equal(own[k], state[k]) for k in state)


def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_timm_names_load_timm_weights_from_the_hf_cache_with_no_network(caches, attempts):
    import timm

    state = fill_timm(caches)
    for spec in ("timm:test_resnet", f"timm:{TIMM}"):  # no tag: timm's default tag, the same weights
        probe = dp.load_model(spec, device="cpu")
        assert _same(probe.inner, state), spec
        assert not probe.random_init and f"timm/{TIMM}" in probe.origin
    # labels from the pretrained config (1000 ImageNet classes), preprocessing from it too
    assert probe.labels == imagenet_labels()
    cfg = timm.models.get_pretrained_cfg(TIMM)
    assert probe.input_size == tuple(cfg.input_size[1:]) == (160, 160)
    assert probe.preprocess.resize == int(160 / cfg.crop_pct) and probe.preprocess.interpolation == cfg.interpolation
    x = torch.rand(1, 3, 160, 160)
    reference = timm.create_model(TIMM, pretrained=False).eval()
    reference.load_state_dict(state)
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(probe.net(x), reference((x - mean) / std), atol=1e-5)
    assert not attempts


def test_timm_reads_a_pytorch_bin_when_the_repo_has_no_safetensors(caches, attempts):
    state = fill_timm(caches, "test_vit.r160_in1k", safetensors=False)
    probe = dp.load_model("timm:test_vit.r160_in1k", device="cpu")
    assert _same(probe.inner, state) and not attempts


def test_torchvision_names_load_the_weights_enum_from_the_torch_cache(caches, attempts):
    import torchvision

    state = fill_torchvision(caches, "mobilenet_v2", "IMAGENET1K_V2")  # the DEFAULT member
    for spec in ("torchvision:mobilenet_v2", "torchvision:mobilenet_v2:IMAGENET1K_V2",
                 "torchvision:mobilenet_v2:MobileNet_V2_Weights.DEFAULT"):
        probe = dp.load_model(spec, device="cpu")
        assert _same(probe.inner, state), spec
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V2
    assert probe.labels == list(weights.meta["categories"]) and "IMAGENET1K_V2" in probe.origin
    tf = weights.transforms()  # the enum's own preprocessing: resize 232 (not the usual 256), crop 224
    assert probe.input_size == (224, 224) and probe.preprocess.resize == tf.resize_size[0] == 232
    assert probe.preprocess.mean == tuple(tf.mean) and probe.preprocess.interpolation == tf.interpolation.value
    image = torch.rand(1, 3, 300, 260)
    mean, std = torch.tensor(tf.mean).view(1, 3, 1, 1), torch.tensor(tf.std).view(1, 3, 1, 1)
    assert torch.allclose(probe.prepare(image), (tf(image) * std + mean).clamp(0, 1), atol=1e-5)
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # set only while torchvision reads the file
    # another member is not cached: offline that is the one-line error
    with pytest.raises(DeepprobeError, match=r"IMAGENET1K_V1.*not in the cache .*checkpoints.*--weights FILE"):
        dp.load_model("torchvision:mobilenet_v2:IMAGENET1K_V1", device="cpu", offline=True)
    with pytest.raises(DeepprobeError, match="choose one of IMAGENET1K_V1, IMAGENET1K_V2"):
        dp.load_model("torchvision:mobilenet_v2:IMAGENET1K_V9", device="cpu")
    assert not attempts


def test_torchvision_segmenter_by_name_uses_its_enum_classes(caches, attempts):
    import torchvision

    state = fill_torchvision(caches, "lraspp_mobilenet_v3_large", "COCO_WITH_VOC_LABELS_V1")
    probe = dp.load_model("torchvision:lraspp_mobilenet_v3_large", device="cpu")
    assert probe.task == "segmentation" and _same(probe.inner, state)
    meta = torchvision.models.segmentation.LRASPP_MobileNet_V3_Large_Weights.DEFAULT.meta
    assert probe.labels == list(meta["categories"]) and not attempts


def test_a_cached_file_is_never_unpickled(caches, tmp_path):
    import torchvision

    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    folder = caches / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    url = torchvision.models.SqueezeNet1_1_Weights.DEFAULT.url
    torch.save({"features.0.weight": Evil()}, folder / os.path.basename(url))
    with pytest.raises(DeepprobeError, match="cannot load the cached weights .*squeezenet1_1"):
        dp.load_model("torchvision:squeezenet1_1", device="cpu")
    assert not marker.exists()


def test_hub_ids_load_from_the_hf_cache(caches, attempts):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64, num_labels=2,
                                 id2label={0: "left", 1: "right"}, label2id={"left": 0, "right": 1})
    torch.manual_seed(0)
    net = transformers.ViTForImageClassification(cfg).eval()
    snapshot = hub_snapshot(caches, "tiny-org/tiny-vit")
    net.save_pretrained(snapshot)
    (snapshot / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    probe = dp.load_model("hf:tiny-org/tiny-vit", device="cpu")
    assert probe.labels == ["left", "right"] and "tiny-org/tiny-vit" in probe.origin
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(probe.net(x), net(pixel_values=(x - 0.5) / 0.5).logits, atol=1e-5)
    with pytest.raises(DeepprobeError, match=r"hf:tiny-org/other: .*models--tiny-org--other.*hf:DIR"):
        dp.load_model("hf:tiny-org/other", device="cpu", offline=True)
    assert not attempts


def _one_error_line(res) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


def test_an_empty_cache_offline_is_one_line_naming_model_folder_and_weights(caches, attempts, monkeypatch):
    line = _one_error_line(cli("classify", CAT, "--model", "timm:test_resnet", "--offline"))
    folder = caches / "hf" / "hub" / f"models--timm--{TIMM}"
    assert f"timm:{TIMM}" in line and str(folder) in line and "--weights FILE" in line
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # --offline also tells the hub client and transformers
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the environment alone switches downloads off too
    line = _one_error_line(cli("classify", CAT, "--model", "torchvision:squeezenet1_1"))
    assert "SqueezeNet1_1_Weights.IMAGENET1K_V1" in line and str(caches / "torch" / "hub" / "checkpoints") in line
    assert not attempts


def test_no_network_is_the_same_one_line_error_after_one_quick_try(caches, attempts):
    line = _one_error_line(cli("classify", CAT, "--model", "timm:test_resnet"))
    assert "no network: cannot reach huggingface.co" in line and "--weights FILE" in line
    assert len(attempts) == 1  # one connection attempt, not the hub client's minute of retries


def test_random_weights_only_when_asked_and_then_named_everywhere(caches, attempts, tmp_path):
    # no weights and no --random-init: never a silently random network
    with pytest.raises(DeepprobeError, match="not in the cache"):
        dp.load_model("timm:test_resnet", device="cpu", offline=True)
    probe = dp.load_model("timm:test_resnet", device="cpu", random_init=True)
    assert probe.random_init and probe.title == "timm:test_resnet (random weights)"
    assert probe.describe()["weights"] == "random weights"
    out = tmp_path / "out"
    args = ["fool", CAT, "--method", "fgsm", "--model", "timm:test_resnet", "--random-init", "--out", str(out)]
    res = cli(*args)
    assert res.exit_code == 0, res.output
    assert "timm:test_resnet (random weights)" in res.stdout  # the table's title
    sidecar = json.loads((out / "cat_fool.json").read_text())
    assert sidecar["random_init"] is True and sidecar["weights"] == "random weights"
    res = cli(*args, "--json")
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["random_init"] is True and summary["weights"] == "random weights"
    res = cli("report", str(out), "--output", str(tmp_path / "report.html"))
    assert res.exit_code == 0, res.output
    assert "timm:test_resnet (random weights)" in (tmp_path / "report.html").read_text()
    assert not attempts


def test_random_init_applies_to_architectures_only(tmp_path):
    torch.save({}, tmp_path / "w.pth")
    with pytest.raises(DeepprobeError, match="exclude each other"):
        dp.load_model("timm:test_resnet", weights=tmp_path / "w.pth", random_init=True, device="cpu")
    with pytest.raises(DeepprobeError, match="--random-init applies to"):
        dp.load_model("python:tests.tiny32:build", random_init=True, device="cpu")


def test_models_lists_the_names_in_the_local_caches(caches, attempts):
    res = cli("models", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["cached"] == []
    fill_timm(caches)
    fill_torchvision(caches, "squeezenet1_1", "IMAGENET1K_V1")
    (hub_snapshot(caches, "tiny-org/tiny-vit") / "config.json").write_text("{}")
    summary = json.loads(cli("models", "--json").stdout)
    assert sorted(row["spec"] for row in summary["cached"]) == [
        "hf:tiny-org/tiny-vit", f"timm:{TIMM}", "torchvision:squeezenet1_1:IMAGENET1K_V1"]
    assert summary["caches"]["torch hub"] == str(caches / "torch" / "hub" / "checkpoints")
    assert f"timm:{TIMM}" in cli("models").stdout and not attempts


def test_online_an_uncached_name_is_downloaded_by_the_library_into_its_cache(caches, monkeypatch, tmp_path):
    """The download itself is torch.hub's (stood in for by a local copy: no network in tests); deepprobe only
    checks the host can be reached, says what it downloads where, and then loads the file torch.hub wrote."""
    import torch.hub

    from deepprobe.models import pretrained

    source = tmp_path / "served.pth"
    state = fill_torchvision(tmp_path / "elsewhere", "squeezenet1_1", "IMAGENET1K_V1")
    torch.save(state, source)
    fetched = []

    def download(url, dst, hash_prefix=None, progress=True):
        fetched.append((url, Path(dst).parent, progress))
        Path(dst).write_bytes(source.read_bytes())

    monkeypatch.setattr(pretrained, "_unreachable", lambda url: None)
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    monkeypatch.setattr(torch.hub, "check_integrity", lambda *a, **k: True, raising=False)
    res = cli("classify", CAT, "--model", "torchvision:squeezenet1_1", "--json")
    folder = caches / "torch" / "hub" / "checkpoints"
    assert res.exit_code == 0, res.output
    assert fetched and fetched[0][1] == folder and fetched[0][2] is True  # with torch.hub's progress bar
    assert "downloading the pretrained weights of torchvision:squeezenet1_1" in res.stderr and str(folder) in res.stderr
    assert (folder / os.path.basename(fetched[0][0])).is_file()
    assert json.loads(res.stdout)["weights"].startswith("pretrained SqueezeNet1_1_Weights.IMAGENET1K_V1")
