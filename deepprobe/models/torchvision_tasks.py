"""torchvision detectors and segmenters, built offline and then given the user's weights file.

The builders default `weights_backbone` to ImageNet weights and would download them; here every architecture is
built with `weights=None, weights_backbone=None` (nothing is fetched), with the class count the weights file
implies, and the file is loaded strictly. Class names come from the weights enums' metadata (offline).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from torch import nn

from ..errors import DeepprobeError
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from .tasks import DETECTION, SEGMENTATION, DetectorNet, SegmenterNet
from .weights import fit_state_dict, read_state_dict

SEGMENTATION_SIZE = 520  # torchvision's segmentation weights resize the short side to 520


def task_of_name(name: str) -> str | None:
    """'detection' / 'segmentation' for a torchvision builder name, None for the rest (classifiers, video...)."""
    from torchvision import models

    if name in models.list_models(module=models.detection):
        return DETECTION
    if name in models.list_models(module=models.segmentation):
        return SEGMENTATION
    return None


def task_specs() -> list[tuple[str, str]]:
    """(spec, task) of every torchvision detector and segmenter, for `deepprobe models`."""
    from torchvision import models

    return ([(f"torchvision:{n}", DETECTION) for n in models.list_models(module=models.detection)]
            + [(f"torchvision:{n}", SEGMENTATION) for n in models.list_models(module=models.segmentation)])


def categories(name: str) -> list[str]:
    """The class names of the builder's published weights (COCO for detectors, VOC for segmenters)."""
    from torchvision import models

    return list(next(iter(models.get_model_weights(name))).meta["categories"])


def build(name: str, weights: str | Path | None, pretrained: nn.Module | None = None,
          enum=None) -> tuple[nn.Module, list[str] | None, Preprocess]:
    """(adapter, class names or None, preprocess) for a torchvision detector or segmenter: built offline and given
    the weights file, or `pretrained` (built with the weights enum `enum`), or random weights."""
    from torchvision import models

    task = task_of_name(name)
    names = list(enum.meta["categories"]) if enum is not None else categories(name)
    kwargs: dict = {"weights": None, "weights_backbone": None}
    net = pretrained if pretrained is not None else models.get_model(name, **kwargs)
    classes = len(names)
    if weights:
        state = read_state_dict(weights)
        if task == SEGMENTATION and any(k.startswith("aux_classifier.") for k in state):
            kwargs["aux_loss"] = True
        classes = implied_classes(net, state, classes)
        if classes != len(names) or "aux_loss" in kwargs:
            net = models.get_model(name, num_classes=classes, **kwargs)
        fit_state_dict(net, with_batchnorm_counters(net, state), Path(weights).name)
    labels = names if classes == len(names) else None
    if task == DETECTION:
        adapter = DetectorNet(net, num_classes=classes)
        # detectors normalise inside: the wrapper passes [0,1] pixels through unchanged
        return adapter, labels, Preprocess(crop=None, resize=adapter.short_side, mean=(0.0,) * 3, std=(1.0,) * 3,
                                           interpolation="bilinear")
    net.aux_classifier = None  # only used in training; skipping it saves a head per forward pass
    return (SegmenterNet(net, num_classes=classes, short_side=SEGMENTATION_SIZE), labels,
            Preprocess(crop=None, resize=SEGMENTATION_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                       interpolation="bilinear"))


def implied_classes(net: nn.Module, state: dict[str, torch.Tensor], default: int) -> int:
    """The class count a weights file was trained with.

    Class-dependent tensors (classifier convolutions, box predictors: anchors x classes rows) have a first
    dimension proportional to the class count; where the file's rows differ from the default build's, the
    ratio gives the count. Files that disagree among themselves are left to fit_state_dict to report.
    """
    votes: Counter[int] = Counter()
    for key, own in net.state_dict().items():
        theirs = state.get(key)
        if theirs is None or own.dim() == 0 or theirs.dim() != own.dim() or theirs.shape == own.shape:
            continue
        if theirs.shape[1:] != own.shape[1:]:
            continue
        rows, own_rows = int(theirs.shape[0]), int(own.shape[0])
        if (rows * default) % own_rows == 0:
            votes[rows * default // own_rows] += 1
    if not votes:
        return default
    count = votes.most_common(1)[0][0]
    if count < 1:
        raise DeepprobeError("the weights file implies fewer than one class")
    return count


def with_batchnorm_counters(net: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the `num_batches_tracked` counters a file saved from FrozenBatchNorm2d layers lacks.

    torchvision builds detector backbones with FrozenBatchNorm2d when it loads its own weights and with
    BatchNorm2d otherwise; both compute the same thing in eval mode, only the counter (unused there) differs.
    """
    own = net.state_dict()
    missing = {k: v for k, v in own.items() if k.endswith("num_batches_tracked") and k not in state}
    return {**state, **missing}
