"""CUDA checks: every command on `--device cuda`, `--amp` (bfloat16 autocast, channels-last) giving correct
results, batches, reruns and ONNX models on the GPU. Marked `cuda`: they skip without a GPU (conftest) and
`benchmarks/gpu_check.sh` runs them. The last test is the CPU side of `--amp` (recorded, ignored, said so).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import deepprobe as dp
from deepprobe.cli import app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PHOTOS = sorted(EXAMPLES.glob("*.jpg"))
cuda = pytest.mark.cuda


def _cli(*args: str, ok=(0,)):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code in ok, result.output
    return result, (json.loads(result.stdout.strip().splitlines()[-1]) if "--json" in args else None)


@pytest.fixture(scope="module")
def gpu_probe():
    return dp.load_model("efficientnet_lite0", device="cuda")


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# ----- every command on --device cuda ---------------------------------------------------------------------
@cuda
def test_classify_a_folder_on_cuda_matches_the_cpu(tmp_path):
    _, gpu = _cli("classify", EXAMPLES, "--device", "cuda", "--json", "--out", tmp_path)
    _, cpu = _cli("classify", EXAMPLES, "--device", "cpu", "--json", "--out", tmp_path)
    assert gpu["device"].startswith("cuda") and len(gpu["results"]) == len(PHOTOS)
    for g, c in zip(gpu["results"], cpu["results"]):
        assert g["top"][0]["class"] == c["top"][0]["class"]
        assert abs(g["top"][0]["probability"] - c["top"][0]["probability"]) < 1e-3


@cuda
@pytest.mark.parametrize("amp", [False, True])
def test_fool_a_batch_on_cuda_reaches_the_confidence_on_the_saved_pngs(tmp_path, amp):
    """Five photos in batches of two (three batches); each saved PNG, re-read by a fresh float32 model on the
    CPU, shows the target at >= 90% (with --amp the attack itself ran in bfloat16)."""
    flags = ["--amp"] if amp else []
    _, summary = _cli("fool", EXAMPLES, "--target", "ostrich", "--batch-size", "2", "--device", "cuda", *flags,
                      "--json", "--out", tmp_path)
    fresh = dp.load_model("efficientnet_lite0", device="cpu")
    assert len(summary["results"]) == len(PHOTOS) and summary["arguments"]["amp"] is amp
    for r in summary["results"]:
        p = fresh.predict(fresh.load_image(r["output"]))[0]
        assert fresh.class_name(int(p.argmax())) == "ostrich", r["input"]
        assert float(p[fresh.class_index("ostrich")]) >= 0.9 and r["confidence_reached"] is True
        assert r["linf_255"] <= 8.0001


@cuda
def test_fool_reruns_pixel_for_pixel_on_cuda(tmp_path):
    _cli("fool", EXAMPLES / "cat.jpg", "--target", "toaster", "--steps", "5", "--seed", "4", "--device", "cuda",
         "--amp", "--quiet", "--out", tmp_path)
    first = tmp_path / "cat_fool_toaster.png"
    _cli("rerun", first.with_suffix(".json"), "--quiet")
    second = tmp_path / "cat_fool_toaster-1.png"
    from deepprobe.io import read_image

    assert torch.equal(read_image(first), read_image(second))
    a, b = (json.loads(p.with_suffix(".json").read_text()) for p in (first, second))
    assert a["arguments"]["amp"] is b["arguments"]["amp"] is True and b["device"].startswith("cuda")


@cuda
def test_fool_from_noise_on_cuda(tmp_path):
    _, summary = _cli("fool", "--from-noise", "--target", "starfish", "--method", "gradient", "--steps", "60",
                      "--device", "cuda", "--json", "--out", tmp_path)
    r = summary["results"][0]
    assert r["success"] and r["confidence"] >= 0.99 and r["checked_on"] == "saved PNG"


@cuda
def test_patch_train_and_apply_on_cuda(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    for name in ("cat.jpg", "coffee.jpg", "astronaut.jpg"):
        shutil.copy(EXAMPLES / name, train / name)
    _, summary = _cli("patch", "train", train, "--target", "toaster", "--size", "0.3", "--steps", "10",
                      "--batch-size", "3", "--device", "cuda", "--json", "--out", tmp_path / "out")
    patch = Path(summary["results"][0]["output"])
    fresh = dp.load_model("efficientnet_lite0", device="cpu")

    def apply(*extra):
        """The rate reported on the GPU against a fresh float32 classification of the saved PNGs on the CPU."""
        _, applied = _cli("patch", "apply", patch, EXAMPLES / "rocket.jpg", EXAMPLES / "motorcycle.jpg", *extra,
                          "--device", "cuda", "--json", "--out", tmp_path / "out")
        seen = [fresh.class_name(int(fresh.predict(fresh.load_image(r["output"])).argmax()))
                for r in applied["results"]]
        assert applied["images"] == 2 and [r["success"] for r in applied["results"]] == \
            [s == applied["target"] for s in seen]
        assert applied["success_rate"] == pytest.approx(sum(s == applied["target"] for s in seen) / 2)
        return applied, seen

    applied, seen = apply()
    assert applied["target"] == "toaster"
    applied, _ = apply("--target", seen[0])  # a class the first saved image is seen as: a rate above 0
    assert applied["success_rate"] >= 0.5


@cuda
@pytest.mark.parametrize("args", [
    ["invert", EXAMPLES / "cat.jpg", "--layer", "blocks.3", "--size", "64", "--steps", "10"],
    ["maximize", "--target", "goldfish", "--size", "64", "--steps", "5", "--photos", "none"],
    ["dream", EXAMPLES / "cat.jpg", "--steps", "2", "--octaves", "2"],
    ["style", EXAMPLES / "cat.jpg", EXAMPLES / "styles" / "swirls.jpg", "--size", "96", "--steps", "5"],
    ["evaluate", EXAMPLES / "cat.jpg", EXAMPLES / "coffee.jpg", "--steps", "3", "--method", "gradcam"],
    ["age", EXAMPLES / "astronaut.jpg", "--target", "60", "--steps", "10", "--rounds", "1"],
], ids=lambda a: a[0])
@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp"])
def test_optimizing_commands_run_on_cuda(tmp_path, args, amp):
    if amp and args[0] == "age":
        pytest.skip("age has its own --device option and no --amp")
    flags = ["--amp"] if amp else []
    _, summary = _cli(*args, "--device", "cuda", *flags, "--json", "--out", tmp_path)
    assert str(summary["device"]).startswith("cuda")
    assert summary["outputs"] and all(Path(p).exists() for p in summary["outputs"])
    for sidecar in [Path(p) for p in summary["outputs"] if p.endswith(".json")]:
        assert json.loads(sidecar.read_text())["device"].startswith("cuda")


@cuda
def test_explain_on_cuda_and_with_amp_matches_the_cpu_maps(tmp_path):
    maps = {}
    for name, flags in (("cpu", ["--device", "cpu"]), ("cuda", ["--device", "cuda"]),
                        ("amp", ["--device", "cuda", "--amp"])):
        _, summary = _cli("explain", EXAMPLES / "cat.jpg", EXAMPLES / "coffee.jpg", "--method", "gradcam",
                          "--method", "ig", "--batch-size", "2", *flags, "--json", "--out", tmp_path / name)
        maps[name] = {(Path(r["input"]).name, m): np.load(v["map"])
                      for r in summary["results"] for m, v in r["methods"].items()}
    assert len(maps["cpu"]) == 4 and maps["cpu"].keys() == maps["cuda"].keys() == maps["amp"].keys()
    for key, reference in maps["cpu"].items():
        assert _correlation(maps["cuda"][key], reference) > 0.99, key
        assert _correlation(maps["amp"][key], reference) > 0.95, key


@cuda
def test_report_of_a_cuda_run(tmp_path):
    _cli("classify", EXAMPLES / "cat.jpg", "--device", "cuda", "--quiet", "--out", tmp_path)
    _cli("fool", EXAMPLES / "cat.jpg", "--steps", "3", "--device", "cuda", "--quiet", "--out", tmp_path)
    _cli("report", tmp_path, "--quiet")
    assert (tmp_path / "report.html").exists() and "cuda" in (tmp_path / "report.html").read_text()


# ----- --amp, through the same code path as the CLI ------------------------------------------------------
def _amp_bundle():
    from deepprobe.cli.common import Common, Run

    run = Run("fool", Common(device="cuda", amp=True), {})
    return run.bundle()


@cuda
def test_amp_runs_the_optimization_in_bfloat16_on_a_channels_last_net(tmp_path):
    from deepprobe.io import quantize, save_png

    probe = _amp_bundle()
    assert probe.notes.get("amp") is True
    conv = next(m for m in probe.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen: set[torch.dtype] = set()
    handle = conv.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    try:
        x = quantize(probe.load_image(EXAMPLES / "coffee.jpg"))
        assert x.device.type == "cuda"
        res = dp.attack(probe, x, "ostrich", seed=0)
    finally:
        handle.remove()
    assert torch.bfloat16 in seen  # the attack's steps ran under autocast
    assert torch.float32 in seen  # the judging forward passes did not
    path = save_png(res.images[0], tmp_path / "coffee_ostrich.png")
    fresh = dp.load_model("efficientnet_lite0", device="cpu")
    p = fresh.predict(fresh.load_image(path))[0]
    assert fresh.class_name(int(p.argmax())) == "ostrich" and float(p.max()) >= 0.9
    assert float(p.max()) == pytest.approx(float(res.target_prob[0]), abs=2e-3)  # GPU and CPU agree on the file


@cuda
def test_gradcam_under_bfloat16_autocast_matches_float32(gpu_probe):
    x = torch.cat([gpu_probe.load_image(p) for p in PHOTOS])
    reference = dp.explain(gpu_probe, x, method="gradcam").float().cpu().numpy()
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        low = dp.explain(gpu_probe, x, method="gradcam").float().cpu().numpy()
    for a, b in zip(low, reference):
        assert _correlation(a, b) > 0.95


@cuda
@pytest.mark.parametrize("method, options", [("lrp", {}), ("lrp", {"composite": "epsilon-gamma-box"}),
                                             ("xgradcam", {}), ("layercam", {}), ("eigencam", {}), ("fullgrad", {}),
                                             ("scorecam", {"layer": "blocks.0.0.bn1"}),
                                             ("ablationcam", {"layer": "blocks.0.0.bn1"})])
def test_new_explainers_on_cuda_match_the_cpu(gpu_probe, lite0, method, options):
    """The methods added with LRP run on the model's device and give the CPU's maps."""
    x = torch.cat([lite0.load_image(p) for p in PHOTOS[:2]])
    targets = lite0.predict(x).argmax(1)
    on_gpu = dp.explain(gpu_probe, x.cuda(), method=method, target=targets.cuda(), **options)
    assert on_gpu.device.type == "cuda"
    on_cpu = dp.explain(lite0, x, method=method, target=targets, **options)
    for a, b in zip(on_gpu.cpu().numpy(), on_cpu.numpy()):
        assert _correlation(a, b) > 0.99, method


@cuda
def test_attnlrp_and_legrad_on_cuda_match_the_cpu():
    import copy
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import tiny_vits

    net = tiny_vits.timm_twin(tiny_vits.torchvision_vit())
    cpu, gpu = tiny_vits.bundle(net), tiny_vits.bundle(copy.deepcopy(net), device="cuda")
    x, targets = torch.rand(3, 3, tiny_vits.SIZE, tiny_vits.SIZE), torch.tensor([0, 2, 4])
    for method in ("attnlrp", "legrad"):
        a = dp.explain(gpu, x.cuda(), method=method, target=targets.cuda()).cpu().numpy()
        b = dp.explain(cpu, x, method=method, target=targets).numpy()
        assert all(_correlation(u, v) > 0.99 for u, v in zip(a, b)), method


@cuda
def test_an_exported_onnx_model_runs_on_cuda(tmp_path):
    import warnings

    timm = pytest.importorskip("timm")
    net = timm.create_model("test_resnet", pretrained=False, num_classes=10).eval()
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(1, 3, 64, 64),), str(path), opset_version=17, dynamo=False)
    gpu = dp.load_model(f"onnx:{path}", device="cuda")
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(gpu.net(x.cuda()).cpu().numpy(), net(x).numpy(), rtol=1e-3, atol=1e-3)


@cuda
def test_device_cuda_with_an_index_and_the_engine_keep_to_it():
    from deepprobe import engine as E

    index = torch.cuda.device_count() - 1  # the last GPU: nothing may fall back to cuda:0
    probe = dp.load_model("efficientnet_lite0", device=f"cuda:{index}")
    assert probe.device == torch.device(f"cuda:{index}")
    x = probe.load_image(EXAMPLES / "cat.jpg")
    param = E.Perturbation(x, 4 / 255, "linf", generator=torch.Generator().manual_seed(0))
    res = E.optimize(probe, param, E.cross_entropy(torch.tensor([9], device=probe.device)), steps=3, lr=1 / 255,
                     optimizer="sign")
    assert res.images.device == probe.device and res.final.device == probe.device


# ----- the CPU side of --amp: recorded, ignored, said so -------------------------------------------------
def test_amp_on_the_cpu_is_recorded_ignored_and_said(tmp_path):
    args = ["fool", EXAMPLES / "cat.jpg", "--steps", "2", "--rounds", "0", "--device", "cpu", "--quiet"]
    amp, _ = _cli(*args, "--amp", "--out", tmp_path / "amp")
    plain, _ = _cli(*args, "--out", tmp_path / "plain")
    assert "--amp works on CUDA only" in amp.stderr and "--amp" not in plain.stderr
    sidecar = json.loads((tmp_path / "amp" / "cat_fool.json").read_text())
    assert sidecar["arguments"]["amp"] is True and sidecar["device"] == "cpu"
    from deepprobe.io import read_image

    assert torch.equal(read_image(tmp_path / "amp" / "cat_fool.png"), read_image(tmp_path / "plain" / "cat_fool.png"))
