"""A detector's candidate boxes before thresholds and NMS: one row of class probabilities per candidate.

The final detections of a detector are a thresholded, suppressed subset of dense candidates (Faster R-CNN's
proposals, RetinaNet's / SSD's / FCOS's anchors), and each detection's score *is* its candidate's class
probability. So "no candidate of class c above t" means "no detection of class c scores above t", and pushing
candidate probabilities moves detections smoothly -- what attacks (DAG, TOG) and patches (Thys) optimize.

`candidate_spec(bundle)` says which layers to capture and how to read them; the engine captures them in one
forward pass (`deepprobe.engine.forward`) and stops before the post-processing. A detector from another source
plugs in by putting its own `CandidateSpec` in `bundle.notes["candidates"]`, or by a `candidate_spec()` method of
its adapter module (DETR: every query's softmax over the classes, no-object last).

`CandidateSpec.boxes`, where a family has it, says where each candidate lies, in the input image's pixels, so
that an attack can act only on the candidates on given objects (DAG's relabelling: the proposals on the
objects to relabel). R-CNN: the RPN proposals, mapped back through the model's internal resize; RetinaNet and
SSD: their anchors / default boxes, mapped back likewise; FCOS: each point's predicted box (its candidates are
points, whose stride-sized anchors overlap no object box by any useful IoU); DETR: each query's predicted box
(its adapter). A spec without boxes (a detector from elsewhere) makes attacks act on every candidate.
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
    # (captured outputs, input (H, W)) -> per image (K, 4) xyxy boxes in input pixels, row for row with `read`;
    # None: the family's candidates have no box to read
    boxes: Callable[[dict, tuple[int, int]], list[torch.Tensor]] | None = None


def _rcnn(acts: dict) -> list[torch.Tensor]:
    """Faster/Mask/Keypoint R-CNN: softmax over the box predictor's class logits, split per image by the
    number of RPN proposals each image got."""
    counts = [len(p) for p in acts["rpn"]]
    return list(torch.softmax(acts["roi_heads.box_predictor"].float(), -1).split(counts))


def _to_input(boxes: list[torch.Tensor], acts: dict, size: tuple[int, int]) -> list[torch.Tensor]:
    """Boxes in the resized images torchvision's GeneralizedRCNNTransform made -> boxes in the input images."""
    from torchvision.models.detection.transform import resize_boxes

    return [resize_boxes(b.detach().float(), tuple(inner), tuple(size))
            for b, inner in zip(boxes, acts["transform"].image_sizes)]


def _rcnn_boxes(acts: dict, size: tuple[int, int]) -> list[torch.Tensor]:
    """R-CNN: each image's RPN proposals (the rows `_rcnn` reads), in input pixels."""
    return _to_input(list(acts["rpn"]), acts, size)


def _anchor_boxes(acts: dict, size: tuple[int, int]) -> list[torch.Tensor]:
    """RetinaNet / SSD: the anchors (default boxes), in the head's row order, in input pixels. The anchor
    generator returns one identical list entry per image; the capture keeps the first (engine.forward)."""
    anchors = acts["anchor_generator"]
    return _to_input([anchors] * len(acts["transform"].image_sizes), acts, size)


def _fcos_boxes(coder) -> Callable[[dict, tuple[int, int]], list[torch.Tensor]]:
    """FCOS: each point's predicted box (its regression decoded from its anchor, clipped as FCOS does)."""
    from torchvision.ops import clip_boxes_to_image

    def boxes(acts: dict, size: tuple[int, int]) -> list[torch.Tensor]:
        points = acts["anchor_generator"]  # in the resized image, as the regression is
        codes = acts["head"]["bbox_regression"].detach().float()
        decoded = [clip_boxes_to_image(coder.decode(c, points), tuple(s))
                   for c, s in zip(codes, acts["transform"].image_sizes)]
        return _to_input(decoded, acts, size)
    return boxes


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
        return CandidateSpec(("transform", "rpn", "roi_heads.box_predictor"), _rcnn, background=0,
                             boxes=_rcnn_boxes)
    if isinstance(inner, tv.FCOS):
        return CandidateSpec(("transform", "head", "anchor_generator"), _fcos, background=None,
                             boxes=_fcos_boxes(inner.box_coder))
    if isinstance(inner, tv.RetinaNet):
        return CandidateSpec(("transform", "head", "anchor_generator"), _sigmoid_head, background=None,
                             boxes=_anchor_boxes)
    if isinstance(inner, tv.ssd.SSD):
        return CandidateSpec(("transform", "head", "anchor_generator"), _softmax_head, background=0,
                             boxes=_anchor_boxes)
    raise DeepprobeError(f"{bundle.spec}: cannot read the candidate boxes of a {type(inner).__name__}; attacks "
                         "and patches support torchvision's Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS and SSD")
