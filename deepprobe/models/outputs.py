"""What detectors and segmenters found in an image, as small dataclasses every command shares.

`detect(bundle, x)` -> one `Detections` (boxes, labels, scores, class names) per image;
`segment(bundle, x)` -> one `Segmentation` (class per pixel, share of the image per class) per image.
Both run one independent forward pass without gradients, like `ModelBundle.predict` for classifiers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..display import Shows
from .tasks import DETECTION, SEGMENTATION, require_task

BACKGROUND_NAMES = ("__background__", "background")
IOU_MATCH = 0.5  # a box "is still there" when a box of the same class overlaps it by more than this


@dataclass
class Detections(Shows):
    """The boxes one image holds: (K,4) xyxy in input pixels, (K,) class indices, (K,) scores, class names.
    From `dp.classify`/`dp.detect`, in Jupyter: the boxes drawn over the photo, as `deepprobe classify` saves."""

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    names: list[str]

    def figure(self):
        from ..figures.tasks import detections_figure

        (image,) = self._needs("image")
        return detections_figure(image, self, self._context_get("min_score", 0.0))

    def __len__(self) -> int:
        return int(self.labels.numel())

    def select(self, keep: torch.Tensor) -> Detections:
        """The detections where the (K,) bool/index `keep` says so."""
        keep = keep.nonzero().flatten().tolist() if keep.dtype == torch.bool else keep.flatten().tolist()
        return Detections(self.boxes[keep], self.labels[keep], self.scores[keep], [self.names[i] for i in keep])

    def above(self, min_score: float) -> Detections:
        return self.select(self.scores >= min_score)

    def of(self, classes) -> Detections:
        """Only detections whose class index is in `classes` (None: all)."""
        if classes is None:
            return self
        wanted = torch.tensor(sorted(set(int(c) for c in classes)), dtype=self.labels.dtype)
        return self.select(torch.isin(self.labels, wanted))

    def still_in(self, later: Detections) -> list[bool]:
        """Per box: is it still there in `later` (a box of the same class overlapping it by more than IOU_MATCH)?
        What "hidden" means for vanishing attacks and patches."""
        from torchvision.ops import box_iou

        if not len(later):
            return [False] * len(self)
        overlaps = box_iou(self.boxes.float(), later.boxes.float().to(self.boxes.device)) > IOU_MATCH
        same_class = self.labels.view(-1, 1) == later.labels.to(self.labels.device).view(1, -1)
        return (overlaps & same_class).any(1).tolist()

    def records(self) -> list[dict]:
        return [{"class": name, "index": int(label), "score": round(float(score), 6),
                 "box": [round(float(v), 2) for v in box]}
                for box, label, score, name in zip(self.boxes, self.labels, self.scores, self.names)]

    def as_dict(self) -> dict:
        return {"detections": self.records()}


@dataclass
class Segmentation(Shows):
    """Class per pixel (H,W) and, per class present, its share of the image (largest first). From
    `dp.classify`/`dp.segment`, in Jupyter: the class colours over the photo, as `deepprobe classify` saves."""

    mask: torch.Tensor
    areas: dict[int, float]
    names: dict[int, str]
    background: int | None

    def figure(self):
        from ..figures.tasks import segmentation_figure

        (image,) = self._needs("image")
        return segmentation_figure(image, self)

    def present(self, with_background: bool = False) -> list[int]:
        """Class indices found in the image, largest area first (background left out unless asked)."""
        return [c for c in self.areas if with_background or c != self.background]

    def records(self) -> list[dict]:
        return [{"class": self.names[c], "index": c, "area": round(a, 6), "background": c == self.background}
                for c, a in self.areas.items()]

    def as_dict(self) -> dict:
        return {"classes": self.records()}


def background_index(bundle) -> int | None:
    """The background class: the label named so, else 0 (the torchvision / VOC / COCO convention)."""
    if bundle.labels:
        lowered = [label.lower() for label in bundle.labels]
        for name in BACKGROUND_NAMES:
            if name in lowered:
                return lowered.index(name)
        return None
    return 0


def detections_from(bundle, outputs: list[dict], min_score: float = 0.0) -> list[Detections]:
    """torchvision-style output dicts -> Detections on the CPU, without gradients, at or above `min_score`."""
    found = []
    for out in outputs:
        boxes, labels, scores = (out[k].detach().float().cpu() for k in ("boxes", "labels", "scores"))
        labels = labels.long()
        det = Detections(boxes.reshape(-1, 4), labels, scores, [bundle.class_name(int(c)) for c in labels])
        found.append(det.above(min_score))
    return found


@torch.no_grad()
def detect(bundle, images: torch.Tensor, min_score: float = 0.0) -> list[Detections]:
    """Boxes per image of a (N,3,H,W) batch in [0,1], at or above `min_score`, highest score first."""
    require_task(bundle, "detect", DETECTION)
    found = detections_from(bundle, bundle.net(images.to(bundle.device)), min_score)
    return [f._attach(image=image.detach(), min_score=min_score) for f, image in zip(found, images)]


def segmentation_from(bundle, logits: torch.Tensor) -> list[Segmentation]:
    """(N,C,H,W) logits -> Segmentation per image (argmax per pixel)."""
    masks = logits.detach().argmax(1).cpu()
    bg = background_index(bundle)
    found = []
    for mask in masks:
        counts = torch.bincount(mask.flatten(), minlength=logits.shape[1]).float() / mask.numel()
        order = [int(c) for c in counts.argsort(descending=True) if counts[c] > 0]
        found.append(Segmentation(mask, {c: float(counts[c]) for c in order},
                                  {c: bundle.class_name(c) for c in order}, bg))
    return found


@torch.no_grad()
def segment(bundle, images: torch.Tensor) -> list[Segmentation]:
    """Class per pixel for a (N,3,H,W) batch in [0,1]."""
    require_task(bundle, "segment", SEGMENTATION)
    found = segmentation_from(bundle, bundle.net(images.to(bundle.device)))
    return [f._attach(image=image.detach()) for f, image in zip(found, images)]

