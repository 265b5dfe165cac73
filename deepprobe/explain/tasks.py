"""Explanations for detectors (one map per detected box) and segmenters (one map per class mask).

Every method of `deepprobe.explain` explains one number per image. Here that number is pytorch-grad-cam's:
- a box: `FasterRCNNBoxScoreTarget` -- among the model's output boxes, the one with the largest IoU with the
  reference box; if that IoU exceeds 0.5 and its label is the reference label, IoU + score, else 0;
- a class on a segmenter: `SemanticSegmentationTarget` -- the class's logits summed over a pixel mask (by
  default the pixels the model assigns to that class).
`ScoreNet` turns the network into a one-output "classifier" of that number, so the CAMs, FullGrad, the captum
methods and LRP (where Zennit covers the network's layers: segmenters of plain CNN layers, not detectors'
region heads) run unchanged on it. Maps come at the input's size in [0,1] like every other map.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from ..errors import DeepprobeError
from ..models.outputs import detect, segment
from ..models.tasks import DETECTION, SEGMENTATION, describe_task
from ..options.explain import CAM_METHODS
from .maps import BoxMaps, class_maps

IOU_THRESHOLD = 0.5  # FasterRCNNBoxScoreTarget's default
# methods that explain one number per image and so carry over to detectors and segmenters
TASK_METHODS = ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam", "scorecam", "ablationcam",
                "fullgrad", "saliency", "ig", "smoothgrad", "occlusion", "guided-backprop", "lrp")


# ------------------------------------------------------------------------------------------ the explained numbers
def box_score(output: dict[str, torch.Tensor], box: torch.Tensor, label: int,
              iou_threshold: float = IOU_THRESHOLD) -> torch.Tensor:
    """IoU + score of the output box that best overlaps `box` (xyxy), when it overlaps by more than
    `iou_threshold` and carries `label`; else 0 (pytorch-grad-cam's FasterRCNNBoxScoreTarget for one box)."""
    from torchvision.ops import box_iou

    boxes = output["boxes"]
    zero = torch.zeros((), device=boxes.device, dtype=boxes.dtype)
    if len(boxes) == 0:
        return zero
    ious = box_iou(box.to(boxes.device, boxes.dtype)[None], boxes)[0]
    best = ious.argmax()
    if ious[best] > iou_threshold and int(output["labels"][best]) == int(label):
        return ious[best] + output["scores"][best]
    return zero


def mask_score(logits: torch.Tensor, cls: int, mask: torch.Tensor) -> torch.Tensor:
    """(N,) sum of class `cls`'s logits over `mask` (H,W) (pytorch-grad-cam's SemanticSegmentationTarget)."""
    return (logits[:, cls] * mask.to(logits.device, logits.dtype)).sum(dim=(1, 2))


class ScoreNet(nn.Module):
    """The network seen as a one-output classifier of `score(outputs)` (an (N,) tensor), for the explainers."""

    def __init__(self, net: nn.Module, score: Callable):
        super().__init__()
        self.net = net
        self.score = score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = self.score(self.net(x))
        if not value.requires_grad and x.requires_grad:  # nothing matched: a zero that still has a gradient
            value = value + 0.0 * x.flatten(1).sum(1)
        return value.reshape(-1, 1)


def score_view(bundle, score: Callable):
    """A bundle whose `net` returns (N,1) = score(outputs) and whose layers are the model's own."""
    return dataclasses.replace(bundle, net=ScoreNet(bundle.net, score), labels=None, task="classification",
                               notes={"num_classes": 1})


# ------------------------------------------------------------------------------------------ default layers
def default_task_layer(bundle, x: torch.Tensor) -> str:
    """The layer a CAM explains on a detector or segmenter: the deepest feature map every output depends on.

    torchvision FPN detectors and segmenters: the last stage of the backbone (`backbone.body.layer4`,
    `backbone.body.16`, `backbone.16`): every FPN level and head reads from it, so no box loses its gradient
    (a single FPN level feeds only the boxes pooled from it). SSD: its first feature level. A plain backbone
    module: its output. Otherwise the last spatial map, as for classifiers.
    """
    from ..models.layers import last_spatial_layer

    inner = bundle.inner
    backbone = getattr(inner, "backbone", None)
    if isinstance(backbone, nn.Module):
        body = getattr(backbone, "body", None)
        if bundle.task == SEGMENTATION and getattr(backbone, "return_layers", None):
            body, prefix = backbone, "backbone"
        else:
            prefix = "backbone.body"
        if body is not None and len(list(body.children())):
            return f"{prefix}.{list(dict(body.named_children()))[-1]}"
        features = getattr(backbone, "features", None)
        if isinstance(features, nn.Sequential) and hasattr(backbone, "extra"):
            first = features[0] if isinstance(features[0], nn.Sequential) else None
            return "backbone.features.0" if first is not None else "backbone.features"
        return "backbone"
    return last_spatial_layer(bundle.net, x[:1], inner)


# ------------------------------------------------------------------------------------------ detectors
def explain_boxes(bundle, x: torch.Tensor, method: str = "gradcam", target=None, layer: str | None = None,
                  min_score: float = 0.5, **method_options) -> list[BoxMaps]:
    """Per image: the boxes at or above `min_score` (of class `target` if given) and one map per box."""
    classes = _classes(bundle, target)
    if method == "chefer":  # DETR: relevance through its own attention, per box's query (explain/detr.py)
        from .detr import detr_relevance

        return detr_relevance(bundle, x, classes, min_score)
    found = [d.of(classes) for d in detect(bundle, x, min_score)]
    layer = layer or (default_task_layer(bundle, x) if method in CAM_METHODS else None)
    results = []
    for i, det in enumerate(found):
        maps = []
        for box, label in zip(det.boxes, det.labels):
            view = score_view(bundle, lambda outs, b=box, c=int(label): torch.stack([box_score(o, b, c) for o in outs]))
            maps.append(class_maps(view, x[i:i + 1], method, target=0, layer=layer, **method_options)[0].cpu())
        size = tuple(x.shape[-2:])
        results.append(BoxMaps(det, torch.stack(maps) if maps else torch.zeros(0, *size)))
    return results


# ------------------------------------------------------------------------------------------ segmenters
def explain_segments(bundle, x: torch.Tensor, method: str = "gradcam", target=None, layer: str | None = None,
                     mask: torch.Tensor | None = None, **method_options) -> torch.Tensor:
    """(N,H,W) maps of class `target` over its predicted pixels (or over `mask`, (H,W) or (N,H,W) bool).

    target None: each image's largest class other than background. An image where the class covers no pixel
    gets an all-zero map (its score is constantly 0).
    """
    seg = segment(bundle, x)
    if target is None:
        classes = [(s.present() or s.present(with_background=True))[0] for s in seg]
    else:
        classes = [bundle.class_index(target)] * x.shape[0]
    layer = layer or (default_task_layer(bundle, x) if method in CAM_METHODS else None)
    maps = []
    for i, (s, cls) in enumerate(zip(seg, classes)):
        region = (s.mask == cls) if mask is None else (mask if mask.dim() == 2 else mask[i])
        if not region.any():
            maps.append(torch.zeros(x.shape[-2:]))
            continue
        view = score_view(bundle, lambda logits, c=cls, m=region.float(): mask_score(logits, c, m))
        maps.append(class_maps(view, x[i:i + 1], method, target=0, layer=layer, **method_options)[0].cpu())
    return torch.stack(maps)


# ------------------------------------------------------------------------------------------ dispatch
def check_method(bundle, method: str) -> None:
    """One line when a method has no meaning on this model's task."""
    from .detr import is_detr

    if method == "lrp":
        from .lrp import check_model

        check_model(bundle)  # a detector's region heads: one line before any work
    if method in TASK_METHODS or (method == "chefer" and is_detr(bundle)):
        return
    extra = " (and chefer on DETR)" if bundle.task == DETECTION else ""
    raise DeepprobeError(f"{method} does not apply to {bundle.spec}: it is {describe_task(bundle.task)}; "
                         f"methods for it: {', '.join(TASK_METHODS)}{extra}")


TASK_EXPLAINERS = {DETECTION: explain_boxes, SEGMENTATION: explain_segments}


def explain_task(bundle, x: torch.Tensor, method: str, target=None, layer: str | None = None, **options):
    """`deepprobe.explain` for a non-classifier: list[BoxMaps] for detectors, (N,H,W) maps for segmenters."""
    if bundle.task not in TASK_EXPLAINERS:
        raise DeepprobeError(f"explain does not apply to {bundle.spec} ({describe_task(bundle.task)})")
    check_method(bundle, method)
    return TASK_EXPLAINERS[bundle.task](bundle, x.to(bundle.device), method, target=target, layer=layer, **options)


def _classes(bundle, target) -> list[int] | None:
    if target is None:
        return None
    names = [target] if isinstance(target, (str, int)) else list(target)
    return [bundle.class_index(t) for t in names]

