"""Top-k classification of a batch (the sanity check every other technique starts from); on a detector the
boxes it finds, on a segmenter the class of every pixel."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DeepprobeError
from ..models import ModelBundle
from ..models.outputs import Detections, Segmentation, detect, segment
from ..models.bundle import require_classifier
from ..models.depth import DepthMap, estimate_depth
from ..models.tasks import DEPTH, DETECTION, PROMPTABLE_SEGMENTATION, SEGMENTATION
from ..options.ranges import check_ranges


@dataclass
class Prediction:
    indices: list[int]
    labels: list[str]
    probabilities: list[float]

    def as_dict(self) -> dict:
        return {"top": [{"class": c, "index": i, "probability": round(p, 6)}
                        for i, c, p in zip(self.indices, self.labels, self.probabilities)]}


def classify(bundle: ModelBundle, images: torch.Tensor, top: int = 5,
             min_score: float = 0.5) -> list[Prediction] | list[Detections] | list[Segmentation] | list[DepthMap]:
    """What the model sees in each image of a (N,3,H,W) batch in [0,1]:
    a classifier's top-`top` classes and softmax probabilities (`Prediction`), a detector's boxes at or above
    `min_score` (`Detections`), a segmenter's class per pixel and area per class (`Segmentation`), a depth
    estimator's depth map (`DepthMap`); CLIP, once its prompts are set (`bundle.set_prompts`), ranks the prompts
    like classes (zero-shot). Segment Anything takes prompts: `segment_prompts`."""
    check_ranges("classify", locals())
    if bundle.task == DETECTION:
        return detect(bundle, images, min_score)
    if bundle.task == SEGMENTATION:
        return segment(bundle, images)
    if bundle.task == DEPTH:
        return estimate_depth(bundle, images)
    if bundle.task == PROMPTABLE_SEGMENTATION:
        raise DeepprobeError("Segment Anything needs prompts: dp.segment_prompts(probe, x, [dp.Prompt.point(x, y)])")
    require_classifier(bundle, "classify")
    probs = bundle.predict(images)
    k = min(top, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    out = []
    for vals, idx in zip(values.tolist(), indices.tolist()):
        out.append(Prediction(idx, [bundle.class_name(i) for i in idx], vals))
    return out
