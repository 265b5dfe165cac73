"""What a network does (classification, detection, segmentation, image-text, promptable segmentation, depth) and
the adapters that give detectors, segmenters and depth estimators one calling convention.

Every bundle's `net` takes (N,3,H,W) float images in [0,1]. What it returns depends on `bundle.task`:
- classification: (N, classes) logits;
- detection: a list of N dicts {"boxes" (K,4) xyxy in input pixels, "labels" (K,), "scores" (K,)} (torchvision's
  convention; the scores keep their gradients), produced by `DetectorNet`;
- segmentation: (N, classes, H, W) logits at the input's size, produced by `SegmenterNet`;
- image-text: defined by the CLIP adapter;
- embedding: (N, D) image embeddings (a head-less backbone: DINO, DINOv2, CLIP's or SigLIP's image tower),
  produced by `models.embedding.EmbedderNet`; compared by cosine similarity.
- promptable-segmentation (Segment Anything): defined by the SAM adapter (models/sam.py): (N, 3, H, W) mask
  logits of its three candidates for the prompt set on it;
- depth: (N, H, W) predicted depth at the input's size, produced by `DepthNet`.
An adapter module says its task with a class attribute `task`; a user's network (python:, torchscript:, onnx:)
gets its task from the shape of its output on one probe image (`wrap_by_output`).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepprobeError

CLASSIFICATION, DETECTION, SEGMENTATION, IMAGE_TEXT = "classification", "detection", "segmentation", "image-text"
EMBEDDING = "embedding"
PROMPTABLE_SEGMENTATION = "promptable-segmentation"
DEPTH = "depth"
TASKS = (CLASSIFICATION, DETECTION, SEGMENTATION, IMAGE_TEXT, EMBEDDING, PROMPTABLE_SEGMENTATION, DEPTH)
# the command (or method) -> the tasks it works on; used for the one-line refusal
_ARTICLE = {CLASSIFICATION: "a classifier", DETECTION: "a detector", SEGMENTATION: "a segmenter",
            IMAGE_TEXT: "an image-text model", EMBEDDING: "an embedder",
            PROMPTABLE_SEGMENTATION: "a promptable segmenter (Segment Anything)", DEPTH: "a depth estimator"}


def describe_task(task: str) -> str:
    """'a detector', 'a segmenter', ... for messages."""
    return _ARTICLE.get(task, f"a {task} model")


def require_task(bundle, what: str, *tasks: str) -> None:
    """One clear line when `what` (a command or method) does not apply to the bundle's task."""
    if bundle.task not in tasks:
        allowed = " or ".join(describe_task(t) for t in tasks)
        raise DeepprobeError(f"{what} does not apply to {bundle.spec}: it is {describe_task(bundle.task)}, "
                             f"and {what} needs {allowed}")


class DetectorNet(nn.Module):
    """A detector that takes a (N,3,H,W) batch in [0,1] and returns torchvision's list of per-image dicts.

    torchvision detectors normalise and resize inside; `short_side` is the size they resize to (images larger
    than that are shrunk before they reach the model, which changes nothing the model sees).
    """

    task = DETECTION

    def __init__(self, net: nn.Module, num_classes: int | None = None, short_side: int | None = None):
        super().__init__()
        self.net = net
        self.num_classes = num_classes if num_classes is not None else detector_classes(net)
        self.short_side = short_side if short_side is not None else _transform_size(net)

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = self.net(list(x))
        if isinstance(out, tuple):  # scripted torchvision detectors return (losses, detections)
            out = out[1]
        return out


class SegmenterNet(nn.Module):
    """A segmenter that returns (N, classes, H, W) logits at the input size (torchvision's dict -> "out")."""

    task = SEGMENTATION

    def __init__(self, net: nn.Module, num_classes: int | None = None, short_side: int | None = None):
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.short_side = short_side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if isinstance(out, Mapping):
            out = out["out"]
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if hasattr(out, "logits"):
            out = out.logits
        if tuple(out.shape[-2:]) != tuple(x.shape[-2:]):
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


class DepthNet(nn.Module):
    """A depth estimator that returns (N, H, W) depth at the input's size (a (N,1,H,W) map is squeezed, a smaller one
    resized).

    `larger_is_nearer`: the output grows as things come nearer (inverse depth / disparity, what Depth Anything's
    relative models predict); False for metric depth. A user's network may say so with an attribute of that name.
    """

    task = DEPTH

    def __init__(self, net: nn.Module, larger_is_nearer: bool | None = None):
        super().__init__()
        self.net = net
        inner = getattr(net, "net", net)  # a LogitsOf wrapper hides the user's attribute
        self.larger_is_nearer = bool(getattr(inner, "larger_is_nearer", False) if larger_is_nearer is None
                                     else larger_is_nearer)
        self.num_classes = None
        self.short_side = None

    def depth(self, x: torch.Tensor) -> torch.Tensor:
        """The network's own depth map (N, h, w), any size."""
        out = self.net(x)
        if hasattr(out, "predicted_depth"):
            out = out.predicted_depth
        return out[:, 0] if out.dim() == 4 else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.depth(x)
        if tuple(out.shape[-2:]) != tuple(x.shape[-2:]):
            out = F.interpolate(out[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return out


def task_of(net: nn.Module) -> str | None:
    """The task an adapter declares (None: a plain network whose output has to be looked at)."""
    return getattr(net, "task", None) if type(net).__module__.startswith("deepprobe") else None


def wrap_by_output(net: nn.Module, output) -> tuple[nn.Module, str]:
    """(adapter, task) for a user's network, judged from its output on one probe image."""
    from .preprocess import LogitsOf

    inner = net.net if isinstance(net, LogitsOf) else net  # the adapters read raw outputs themselves
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], Mapping) and "boxes" in output[0]:
        return DetectorNet(inner), DETECTION
    if isinstance(output, Mapping) and "out" in output:
        return SegmenterNet(inner, num_classes=int(output["out"].shape[1])), SEGMENTATION
    if isinstance(output, torch.Tensor) and output.dim() == 4:
        return SegmenterNet(inner, num_classes=int(output.shape[1])), SEGMENTATION
    if isinstance(output, torch.Tensor) and output.dim() == 3:
        return DepthNet(net), DEPTH
    return net, CLASSIFICATION


def detector_classes(net: nn.Module) -> int | None:
    """Class count of a torchvision-style detector (background slot included), read from its head."""
    roi = getattr(net, "roi_heads", None)
    if roi is not None and hasattr(roi, "box_predictor"):
        return int(roi.box_predictor.cls_score.out_features)
    head = getattr(getattr(net, "head", None), "classification_head", None)
    if head is not None:
        for attr in ("num_classes", "num_columns"):
            if hasattr(head, attr):
                return int(getattr(head, attr))
    return None


def _transform_size(net: nn.Module) -> int | None:
    transform = getattr(net, "transform", None)
    sizes = getattr(transform, "min_size", None)
    if isinstance(sizes, (tuple, list)) and sizes:
        return int(max(sizes))
    return int(sizes) if isinstance(sizes, int) else None
