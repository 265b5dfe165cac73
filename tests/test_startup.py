"""A one-photo `deepprobe classify` imports only what the bundled model needs (benchmarks/bench_startup.py times
it), and the torch-only code that replaced the heavy imports gives what the libraries gave."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys

import torch

# Imported by nothing a bundled classification needs; each costs from a tenth of a second to seconds (torchvision
# and timm import torch._dynamo and sympy).
NOT_NEEDED = ("timm", "torchvision", "torch._dynamo", "sympy", "transformers", "captum", "matplotlib", "scipy",
              "onnx", "onnxruntime", "onnx2torch", "safetensors", "cv2", "skimage", "dlib", "huggingface_hub")

CLASSIFY = r"""
import json, sys
from deepprobe.cli import app
try:
    app(["classify", sys.argv[1], "--json", "--out", sys.argv[2]], prog_name="deepprobe")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_classify_with_the_bundled_model_imports_only_what_it_needs(examples, tmp_path):
    out = subprocess.run([sys.executable, "-c", CLASSIFY, str(examples / "cat.jpg"), str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    summary, report = (json.loads(line) for line in out.stdout.strip().splitlines()[-2:])
    assert report["code"] == 0, out.stderr
    assert summary["results"][0]["top"][0]["class"] in {"tiger cat", "Egyptian cat", "tabby"}
    loaded = set(report["modules"])
    assert "torch" in loaded  # the check sees the modules of the run
    assert not loaded & set(NOT_NEEDED), sorted(loaded & set(NOT_NEEDED))


def test_imagenet_class_names_are_torchvisions():
    from torchvision.models import ResNet18_Weights

    from deepprobe.models.labels import imagenet_labels

    assert imagenet_labels() == list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def test_resize_and_center_crop_equal_torchvisions():
    """Preprocessing runs in torch alone; torchvision's tensor resize (short side, long side truncated; or (H, W))
    and centre crop (zero padding when the image is smaller) give the same numbers, whatever the aspect."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    from deepprobe.models.preprocess import Preprocess, center_crop, resize

    g = torch.Generator().manual_seed(0)
    for (h, w), mode, size in itertools.product([(300, 200), (200, 301), (224, 224), (37, 500)],
                                                ["bicubic", "bilinear", "nearest"], [224, 256, [96, 130]]):
        x = torch.rand(2, 3, h, w, generator=g)
        ours = resize(x, size, mode)
        assert torch.equal(ours, F.resize(x, size, interpolation=InterpolationMode(mode), antialias=True))
        for crop in ((224, 224), (310, 300), (50, 61)):
            assert torch.equal(center_crop(ours, crop), F.center_crop(ours, list(crop)))
    x = torch.rand(1, 3, 333, 250, generator=g)
    reference = F.center_crop(F.resize(x, 256, interpolation=InterpolationMode.BICUBIC, antialias=True), [224, 224])
    assert torch.equal(Preprocess().geometry(x), reference.clamp(0, 1))
