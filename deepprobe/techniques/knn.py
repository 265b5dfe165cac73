"""Galleries of embedded images: nearest neighbours (retrieval) and DINO's weighted k-NN classification.

DINO (Caron et al. 2021, eval_knn.py) judges a backbone without training anything: embeddings are L2-normalized,
the k gallery images with the largest cosine similarity vote for their class, each with weight exp(sim / T)
(k = 20, T = 0.07), and the class with the largest summed weight wins. The same gallery tells a feature attack
whether retrieval changed (`nearest`). Everything here works on tensors; the CLI reads the folders.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import DeepprobeError
from ..models.embedding import embed
from ..options.classify import Options
from ..options.ranges import check_ranges


@dataclass
class Gallery:
    """Unit-length embeddings of the gallery images, their names (file paths) and classes (None: unlabelled)."""

    embeddings: torch.Tensor  # (M, D) float32, unit length
    names: list[str]
    labels: list[str] | None = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels or []))


@dataclass
class Neighbours:
    """One query's nearest gallery images, most similar first."""

    indices: list[int]
    names: list[str]
    similarities: list[float]
    labels: list[str] | None = None

    def as_dict(self) -> list[dict]:
        return [{"name": n, "cosine": round(s, 6), **({"class": self.labels[i]} if self.labels else {})}
                for i, (n, s) in enumerate(zip(self.names, self.similarities))]


@dataclass
class KnnPrediction:
    """DINO's k-NN vote for one query: classes by summed weight (shares of the total), and the neighbours."""

    labels: list[str]
    scores: list[float]  # each class's share of the summed weights exp(sim / T) of the k neighbours
    neighbours: Neighbours

    def as_dict(self) -> dict:
        return {"top": [{"class": c, "vote": round(s, 6)} for c, s in zip(self.labels, self.scores)],
                "neighbours": self.neighbours.as_dict()}


@torch.no_grad()
def build_gallery(bundle, images: torch.Tensor, names: Sequence[str], labels: Sequence[str] | None = None,
                  batch_size: int = 32) -> Gallery:
    """Embed (M,3,H,W) images in [0,1] at the model's input size (in batches of `batch_size`)."""
    if len(names) != images.shape[0] or (labels is not None and len(labels) != images.shape[0]):
        raise DeepprobeError("a gallery needs one name (and one label, if any) per image")
    parts = [embed(bundle, images[i:i + batch_size]).cpu() for i in range(0, images.shape[0], batch_size)]
    return Gallery(torch.cat(parts) if parts else torch.zeros(0, 0), list(names),
                   list(labels) if labels is not None else None)


def nearest(gallery: Gallery, queries: torch.Tensor, k: int = 1, exclude: Sequence[set[int]] | None = None
            ) -> list[Neighbours]:
    """The k most cosine-similar gallery images of each unit-length query embedding (N,D); `exclude[n]` holds
    gallery indices query n may not return (e.g. the query's own file)."""
    if len(gallery) == 0:
        raise DeepprobeError("the gallery holds no images")
    sims = queries.float().cpu() @ gallery.embeddings.T
    if exclude is not None:
        for n, skip in enumerate(exclude):
            if skip:
                sims[n, list(skip)] = float("-inf")
    k = min(k, len(gallery))
    values, indices = sims.topk(k, dim=1)
    out = []
    for vals, idx in zip(values.tolist(), indices.tolist()):
        out.append(Neighbours(idx, [gallery.names[i] for i in idx], vals,
                              [gallery.labels[i] for i in idx] if gallery.labels else None))
    return out


def knn_votes(similarities: torch.Tensor, labels: torch.Tensor, classes: int,
              temperature: float = Options.temperature) -> torch.Tensor:
    """DINO's vote: (N,k) cosine similarities of the neighbours and (N,k) their class indices -> (N, classes)
    summed weights exp(sim / T)."""
    weights = (similarities.float() / temperature).exp()
    votes = torch.zeros(similarities.shape[0], classes, dtype=weights.dtype)
    return votes.scatter_add_(1, labels.long(), weights)


def knn_classify(bundle, images: torch.Tensor, gallery: Gallery, neighbors: int = Options.neighbors,
                 temperature: float = Options.temperature, top: int = Options.top) -> list[KnnPrediction]:
    """DINO's weighted k-NN classification of (N,3,H,W) images in [0,1] over a labelled gallery: the `neighbors`
    most cosine-similar gallery images vote for their class with weight exp(cosine / temperature)."""
    check_ranges("classify", locals())
    with torch.no_grad():
        return knn_predict(gallery, embed(bundle, images), neighbors, temperature, top)


def knn_predict(gallery: Gallery, queries: torch.Tensor, k: int = Options.neighbors,
                temperature: float = Options.temperature, top: int = Options.top) -> list[KnnPrediction]:
    """`knn_classify` on unit-length query embeddings (N,D) already computed."""
    if not gallery.labels:
        raise DeepprobeError("k-NN classification needs a labelled gallery (one sub-folder per class)")
    found = nearest(gallery, queries, k)
    classes = gallery.classes
    index = {c: i for i, c in enumerate(classes)}
    sims = torch.tensor([f.similarities for f in found])
    labels = torch.tensor([[index[lab] for lab in f.labels] for f in found])
    votes = knn_votes(sims, labels, len(classes), temperature)
    shares = votes / votes.sum(1, keepdim=True)
    values, order = shares.topk(min(top, len(classes)), dim=1)
    return [KnnPrediction([classes[i] for i in idx], vals, f)
            for idx, vals, f in zip(order.tolist(), values.tolist(), found)]
