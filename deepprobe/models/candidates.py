"""A detector's candidate boxes before thresholds and NMS: one row of class probabilities per candidate.

The final detections of a detector are a thresholded, suppressed subset of dense candidates (Faster R-CNN's
proposals, RetinaNet's / SSD's / FCOS's anchors), and each detection's score *is* its candidate's class
probability. So "no candidate of class c above t" means "no detection of class c scores above t", and pushing
candidate probabilities moves detections smoothly -- what attacks (DAG, TOG) and patches (Thys) optimize.

`candidate_spec(bundle)` says which layers to capture and how to read them; the engine captures them in one
forward pass (`deepprobe.engine.forward`) and stops before the post-processing. A detector from another source
plugs in by putting its own `CandidateSpec` in `bundle.notes["candidates"]`, or by a `candidate_spec()` method of
its adapter module (DETR: every query's softmax over the classes, no-object last).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import DeepprobeError


@dataclass(frozen=True)
class CandidateSpec:
    layers: tuple[str, ...]  # layer names (relative to bundle.inner) whose outputs hold the class scores
    read: Callable[[dict], list[torch.Tensor]]  # captured outputs -> per image (K, C) class probabilities
    background: int | None  # the background column of softmax heads; None: independent sigmoid scores


def _rcnn(acts: dict) -> list[torch.Tensor]:
    """Faster/Mask/Keypoint R-CNN: softmax over the box predictor's class logits, split per image by the
    number of RPN proposals each image got."""
    counts = [len(p) for p in acts["rpn"]]
    return list(torch.softmax(acts["roi_heads.box_predictor"].float(), -1).split(counts))


def _sigmoid_head(acts: dict) -> list[torch.Tensor]:
    """RetinaNet: sigmoid of the classification head's logits over every anchor."""
    return list(torch.sigmoid(acts["head"]["cls_logits"].float()))


def _fcos(acts: dict) -> list[torch.Tensor]:
    """FCOS: sqrt(sigmoid(class) * sigmoid(centerness)), its post-processing's score."""
    head = acts["head"]
    return list(torch.sqrt(torch.sigmoid(head["cls_logits"].float()) * torch.sigmoid(head["bbox_ctrness"].float())))


def _softmax_head(acts: dict) -> list[torch.Tensor]:
    """SSD / SSDlite: softmax over classes (background first) for every anchor."""
    return list(torch.softmax(acts["head"]["cls_logits"].float(), -1))


def candidate_spec(bundle) -> CandidateSpec:
    """How to read the candidates of the bundle's detector (torchvision families, or notes['candidates'])."""
    if "candidates" in bundle.notes:
        return bundle.notes["candidates"]
    for module in bundle.net.modules():  # an adapter that knows its model's candidates (DETR's queries)
        declared = getattr(module, "candidate_spec", None)
        if callable(declared) and type(module).__module__.startswith("deepprobe"):
            return declared()
    from torchvision.models import detection as tv

    inner = bundle.inner
    if isinstance(inner, tv.FasterRCNN):
        return CandidateSpec(("rpn", "roi_heads.box_predictor"), _rcnn, background=0)
    if isinstance(inner, tv.FCOS):
        return CandidateSpec(("head",), _fcos, background=None)
    if isinstance(inner, tv.RetinaNet):
        return CandidateSpec(("head",), _sigmoid_head, background=None)
    if isinstance(inner, tv.ssd.SSD):
        return CandidateSpec(("head",), _softmax_head, background=0)
    raise DeepprobeError(f"{bundle.spec}: cannot read the candidate boxes of a {type(inner).__name__}; attacks "
                         "and patches support torchvision's Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS and SSD")
