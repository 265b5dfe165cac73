"""DETR (Hugging Face DetrForObjectDetection) as a detector with torchvision's calling convention.

`DetrDetector` takes normalized (N,3,H,W) images of any size, resizes them inside as DETR's image processor
does (short side to `shortest_edge`, long side at most `longest_edge`; differentiable, like torchvision's
detectors), and returns one dict per image {"boxes" xyxy in input pixels, "labels", "scores", "queries"}: every
query's best real class (the no-object class left out) and its probability, highest score first, as
transformers' post_process_object_detection computes them. Scores keep their gradients.

Loading never downloads: DETR checkpoints name a timm backbone with `use_pretrained_backbone: true`; the
backbone is built without pretrained weights (the folder's weights replace them anyway).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from .tasks import DETECTION

SHORTEST_EDGE, LONGEST_EDGE = 800, 1333  # DetrImageProcessor's defaults


def detr_input_size(height: int, width: int, shortest: int, longest: int) -> tuple[int, int]:
    """The (H, W) DETR's processor resizes an image to: short side `shortest` unless the long side would pass
    `longest` (then the long side is `longest`); aspect kept."""
    short, long = min(height, width), max(height, width)
    scale = shortest / short
    if long * scale > longest:
        scale = longest / long
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def cxcywh_to_xyxy(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """DETR's relative (cx, cy, w, h) -> absolute (x0, y0, x1, y1) in an image of the given size."""
    cx, cy, w, h = boxes.unbind(-1)
    scale = boxes.new_tensor([width, height, width, height])
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1) * scale


class DetrDetector(nn.Module):
    """A DetrForObjectDetection (`.net`) behind the detector convention of models/tasks.py."""

    task = DETECTION

    def __init__(self, model: nn.Module, shortest: int = SHORTEST_EDGE, longest: int = LONGEST_EDGE):
        super().__init__()
        self.net = model
        self.shortest, self.longest = int(shortest), int(longest)
        self.num_classes = int(model.config.num_labels)
        self.short_side = self.shortest

    def resized(self, x: torch.Tensor) -> torch.Tensor:
        size = detr_input_size(int(x.shape[-2]), int(x.shape[-1]), self.shortest, self.longest)
        if size == tuple(x.shape[-2:]):
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=size[0] < x.shape[-2])

    def raw(self, x: torch.Tensor, **kwargs):
        """DETR's own output (logits (N,Q,C+1), pred_boxes (N,Q,4) relative) for normalized images."""
        return self.net(pixel_values=self.resized(x), **kwargs)

    def candidate_spec(self):
        """For attacks and patches (models/candidates.py): each query is a candidate; its class probabilities
        are the softmax of DETR's class head, with the no-object column (last) as background; its box is the
        query's predicted box."""
        from .candidates import CandidateSpec

        return CandidateSpec(("class_labels_classifier", "bbox_predictor"), _query_probabilities,
                             background=self.num_classes, boxes=_query_boxes)

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = self.raw(x)
        return detections_of(out.logits, out.pred_boxes, int(x.shape[-2]), int(x.shape[-1]))


def _query_probabilities(acts: dict) -> list[torch.Tensor]:
    return list(torch.softmax(acts["class_labels_classifier"].float(), -1))


def _query_boxes(acts: dict, size: tuple[int, int]) -> list[torch.Tensor]:
    """Every query's predicted box (bbox_predictor's output, before its sigmoid) in input pixels."""
    return list(cxcywh_to_xyxy(acts["bbox_predictor"].detach().float().sigmoid(), *size))


def detections_of(logits: torch.Tensor, pred_boxes: torch.Tensor, height: int, width: int) -> list[dict]:
    """DETR output -> per-image dicts over all queries, highest score first (no score threshold here)."""
    probs = logits.float().softmax(-1)[..., :-1]
    scores, labels = probs.max(-1)
    boxes = cxcywh_to_xyxy(pred_boxes.float(), height, width)
    found = []
    for s, lab, b in zip(scores, labels, boxes):
        order = s.argsort(descending=True)
        found.append({"boxes": b[order], "labels": lab[order], "scores": s[order], "queries": order})
    return found


def offline_config(folder: Path):
    """The folder's DetrConfig, built without any network access and without pretrained backbone weights.

    Checkpoints saved by transformers 4 (facebook/detr-resnet-50 as published) name a timm backbone
    ("backbone": "resnet50", "backbone_kwargs", "use_pretrained_backbone": true). transformers 5 turns such a
    config into a backbone config by asking the Hub whether "resnet50" is a model repository, which fails (or
    hangs) offline; here the timm backbone config is written out directly, as transformers 5 itself does for
    configs without backbone_kwargs. Under transformers 4 the config loads as it is, with
    use_pretrained_backbone switched off.
    """
    import json

    import transformers
    from transformers import DetrConfig

    data = json.loads((folder / "config.json").read_text())
    if int(transformers.__version__.split(".")[0]) < 5:
        return DetrConfig.from_dict({**data, "use_pretrained_backbone": False})
    if data.get("backbone_config") is None and data.get("use_timm_backbone", True):
        extra = data.pop("backbone_kwargs", None) or {}
        backbone = {"model_type": "timm_backbone", "backbone": data.pop("backbone", None) or "resnet50",
                    "num_channels": extra.get("in_chans", data.get("num_channels", 3)), "features_only": True,
                    "use_pretrained_backbone": False, "out_indices": extra.get("out_indices", [1, 2, 3, 4])}
        if data.get("dilation"):
            backbone["output_stride"] = extra.get("output_stride", 16)
        data["backbone_config"] = backbone
    for key in ("backbone", "backbone_kwargs", "use_pretrained_backbone", "use_timm_backbone"):
        data.pop(key, None)
    if isinstance(data.get("backbone_config"), dict):
        data["backbone_config"]["use_pretrained_backbone"] = False
    return DetrConfig.from_dict(data)


def load_detr(folder: Path):
    """(DetrDetector, class names, Preprocess) from a save_pretrained folder, offline."""
    from transformers import DetrForObjectDetection

    from .hf_processor import load_saved, processor_config

    config = offline_config(folder)
    model = load_saved(DetrForObjectDetection, folder, f"cannot load DETR from {folder}", config=config,
                       attn_implementation="eager")
    id2label = getattr(config, "id2label", None) or {}
    labels = [str(id2label.get(i, id2label.get(str(i), f"class {i}"))) for i in range(config.num_labels)]
    cfg = processor_config(folder)
    size = cfg.get("size", {}) if isinstance(cfg.get("size"), dict) else {}
    shortest, longest = int(size.get("shortest_edge", SHORTEST_EDGE)), int(size.get("longest_edge", LONGEST_EDGE))
    mean, std = tuple(cfg.get("image_mean", IMAGENET_MEAN)), tuple(cfg.get("image_std", IMAGENET_STD))
    # images larger than DETR's input are shrunk once when read; the detector resizes the rest itself
    pre = Preprocess(crop=None, resize=shortest, mean=mean, std=std, interpolation="bilinear")
    return DetrDetector(model, shortest, longest), labels, pre
