"""Top-k classification of a batch (the sanity check every other technique starts from)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import ModelBundle
from ..options.ranges import check_ranges


@dataclass
class Prediction:
    indices: list[int]
    labels: list[str]
    probabilities: list[float]

    def as_dict(self) -> dict:
        return {"top": [{"class": c, "index": i, "probability": round(p, 6)}
                        for i, c, p in zip(self.indices, self.labels, self.probabilities)]}


def classify(bundle: ModelBundle, images: torch.Tensor, top: int = 5) -> list[Prediction]:
    """Top-`top` classes and softmax probabilities per image of a (N,3,H,W) batch in [0,1]."""
    check_ranges("classify", locals())
    probs = bundle.predict(images)
    k = min(top, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    out = []
    for vals, idx in zip(values.tolist(), indices.tolist()):
        out.append(Prediction(idx, [bundle.class_name(i) for i in idx], vals))
    return out
