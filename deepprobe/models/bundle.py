"""ModelBundle: a network that takes [0,1] RGB images, with its class names, input geometry and layers."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import DeepprobeError
from .labels import resolve_class
from .preprocess import Preprocess


@dataclass
class ModelBundle:
    """Everything a technique needs to know about a model; `net` has normalization built in."""

    net: nn.Module
    labels: list[str] | None
    preprocess: Preprocess
    spec: str
    device: torch.device
    weights: str | None = None
    notes: dict = field(default_factory=dict)
    # what the network does: classification | detection | segmentation | image-text; commands refuse a
    # method that does not apply to the task with one clear line
    task: str = "classification"
    # random weights (--random-init): every title, sidecar, report and --json summary says so
    random_init: bool = False
    # where the weights came from: "pretrained ...", a file, "bundled ...", "random weights"; None: in the model
    # file itself (TorchScript, ONNX, a Hugging Face folder) or as a python: factory built it
    origin: str | None = None

    @property
    def title(self) -> str:
        """The spec as titles show it: random weights are named there."""
        return f"{self.spec} (random weights)" if self.random_init else self.spec

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self.preprocess.crop

    @property
    def inner(self) -> nn.Module:
        """The user's network without our normalization wrapper (layer names are relative to it)."""
        net = self.net
        while hasattr(net, "net") and isinstance(net.net, nn.Module) and type(net).__module__.startswith("deepprobe"):
            net = net.net
        return net

    def class_index(self, name: str | int) -> int:
        """Class name (typos get suggestions) or integer index -> index."""
        return resolve_class(self.labels, name, self.num_classes)

    def class_name(self, index: int) -> str:
        return self.labels[index] if self.labels and 0 <= index < len(self.labels) else f"class {index}"

    @property
    def num_classes(self) -> int | None:
        if self.labels:
            return len(self.labels)
        return self.notes.get("num_classes")

    def load_image(self, path: str | Path) -> torch.Tensor:
        """(1,3,H,W) float in [0,1] on the model's device, resized and cropped as the model expects."""
        from ..io import read_image

        return self.prepare(read_image(path))

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """Bring a [0,1] image batch to the model's input geometry and device."""
        if image.dim() == 3:
            image = image.unsqueeze(0)
        return self.preprocess.geometry(image.float()).to(self.device)

    def layer(self, name: str) -> nn.Module:
        """A submodule by the dotted name `deepprobe layers` prints; typos get suggestions."""
        from .layers import find_layer

        return find_layer(self.inner, name)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities for a batch (an independent forward pass, no gradients)."""
        return torch.softmax(self.net(images.to(self.device)).float(), dim=1)

    def set_prompts(self, texts: list[str], names: list[str] | None = None) -> ModelBundle:
        """Image-text models (CLIP): the prompts the logits range over; `names` (default: the texts) become the
        class names. Returns the bundle, so `probe = dp.load_model("hf:DIR").set_prompts([...])` reads well."""
        from .clip import zero_shot_head

        head = zero_shot_head(self.net)
        if head is None:
            raise DeepprobeError(f"model {self.spec} (task {self.task}) takes no text prompts; only CLIP does")
        texts = [str(t) for t in texts]
        names = list(names) if names is not None else texts
        if len(names) != len(texts):
            raise DeepprobeError(f"got {len(names)} names for {len(texts)} prompts")
        head.set_prompts(texts)
        self.labels = names
        self.notes["prompts"] = texts
        return self

    def describe(self) -> dict:
        return {"spec": self.spec, "weights": self.origin or self.weights, "random_init": self.random_init,
                "device": str(self.device), "input_size": list(self.input_size) if self.input_size else None}


def require_classifier(bundle: ModelBundle, what: str = "this command") -> None:
    """Refuse, in one line, a model that is not a classifier (a detector, a segmenter). CLIP with its prompts
    set is one: its logits range over the prompts."""
    from .tasks import CLASSIFICATION, IMAGE_TEXT, require_task

    require_task(bundle, what, CLASSIFICATION, IMAGE_TEXT)
    if bundle.task == IMAGE_TEXT and not bundle.labels:
        raise DeepprobeError(f"{what} on an image-text model (CLIP) needs the prompts to score: --text/--labels "
                             "(classify, explain, fool, evaluate) or probe.set_prompts([...]) in Python")
    if bundle.num_classes is None:
        raise DeepprobeError(f"model {bundle.spec} does not look like a classifier (no class outputs found)")
