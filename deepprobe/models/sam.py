"""Segment Anything (Hugging Face SamModel + SamProcessor in `hf:DIR`) as a promptable segmenter.

`SamSegmenter` takes normalized (N,3,H,W) images of any size and does inside, differentiably, what SamProcessor
and post_process_masks do around the model: resize the long side to `longest` (1024), pad bottom-right to
`pad` (1024 x 1024), and bring the low-resolution masks back (upsample to the padded size, crop the padding,
resize to the input). Prompts are points and boxes in the input's pixels, mapped to the model's 1024 frame as
SamProcessor maps them. The image embedding (the costly vision encoder) is computed by `embed` once per image;
`decode` turns it and a prompt into SAM's three candidate masks (logits at the input size) and their
predicted IoU scores, so one image serves many prompts.

As a `bundle.net`, the forward pass returns the image embeddings when no prompt is set, and the (N, 3, H, W)
mask logits of the prompt set by `with sam.prompted(prompt):` (what attacks and explainers differentiate).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepprobeError
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from .tasks import PROMPTABLE_SEGMENTATION

LONGEST_EDGE = 1024  # SamImageProcessor: the long side goes to 1024, then zero padding to 1024 x 1024
CAM_LAYER = "vision_encoder.neck"  # the image embedding every mask is decoded from


@dataclass(frozen=True)
class Prompt:
    """What to segment: points (x, y) with labels (1 foreground, 0 background) and/or a box (x0, y0, x1, y1),
    in the pixels of the image the model is given."""

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = field(default=())
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self):
        if not self.points and self.box is None:
            raise DeepprobeError("a prompt needs a point or a box")
        if self.labels and len(self.labels) != len(self.points):
            raise DeepprobeError(f"got {len(self.labels)} point labels for {len(self.points)} points")
        if self.box is not None and not (self.box[0] < self.box[2] and self.box[1] < self.box[3]):
            raise DeepprobeError(f"box {','.join(f'{v:g}' for v in self.box)} is empty: it needs X0 < X1 and Y0 < Y1")

    @classmethod
    def point(cls, x: float, y: float) -> Prompt:
        return cls(points=((float(x), float(y)),))

    @classmethod
    def of_box(cls, x0: float, y0: float, x1: float, y1: float) -> Prompt:
        return cls(box=(float(x0), float(y0), float(x1), float(y1)))

    @property
    def point_labels(self) -> tuple[int, ...]:
        return self.labels or (1,) * len(self.points)

    def scaled(self, sx: float, sy: float) -> Prompt:
        """The same prompt in an image resized by (sx, sy)."""
        box = None if self.box is None else (self.box[0] * sx, self.box[1] * sy, self.box[2] * sx, self.box[3] * sy)
        return Prompt(tuple((x * sx, y * sy) for x, y in self.points), self.labels, box)

    def check(self, height: int, width: int) -> None:
        """One clear line when the prompt lies outside an image of this size."""
        coords = list(self.points) + ([] if self.box is None else [self.box[:2], self.box[2:]])
        for x, y in coords:
            if not (0 <= x <= width and 0 <= y <= height):
                raise DeepprobeError(f"prompt {self.describe()} lies outside the {width}x{height} image")

    def describe(self) -> str:
        parts = [("point " if lab else "background point ") + f"{x:g},{y:g}"
                 for (x, y), lab in zip(self.points, self.point_labels)]
        if self.box is not None:
            parts.append("box " + ",".join(f"{v:g}" for v in self.box))
        return " + ".join(parts)

    def as_dict(self) -> dict:
        return {"points": [list(p) for p in self.points], "labels": list(self.point_labels),
                "box": None if self.box is None else list(self.box)}


def model_frame(height: int, width: int, longest: int = LONGEST_EDGE) -> tuple[int, int]:
    """The (H, W) SamImageProcessor resizes an image to before padding (its _get_preprocess_shape)."""
    scale = longest / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def to_model_coords(coords: torch.Tensor, height: int, width: int, longest: int = LONGEST_EDGE) -> torch.Tensor:
    """(..., 2) x, y in an image of (height, width) pixels -> SAM's frame (SamProcessor._normalize_coordinates)."""
    new_h, new_w = model_frame(height, width, longest)
    return coords * coords.new_tensor([new_w / width, new_h / height])


class SamSegmenter(nn.Module):
    """A SamModel (`.net`) behind the promptable-segmentation convention (see the module docstring)."""

    task = PROMPTABLE_SEGMENTATION
    cam_layer = CAM_LAYER

    def __init__(self, model: nn.Module, longest: int = LONGEST_EDGE, pad: tuple[int, int] | None = None):
        super().__init__()
        self.net = model
        self.longest = int(longest)
        self.pad = tuple(pad) if pad is not None else (self.longest, self.longest)
        self.prompt: Prompt | None = None
        self.num_classes = None
        self.short_side = None

    @contextlib.contextmanager
    def prompted(self, prompt: Prompt | None) -> Iterator[SamSegmenter]:
        """The forward pass returns the mask logits of `prompt` inside the block."""
        before, self.prompt = self.prompt, prompt
        try:
            yield self
        finally:
            self.prompt = before

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image embeddings (N, C, h, w) of normalized images (differentiable; SamModel.get_image_embeddings is
        not)."""
        height, width = model_frame(int(x.shape[-2]), int(x.shape[-1]), self.longest)
        if (height, width) != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False,
                              antialias=height < x.shape[-2])
        x = F.pad(x, (0, self.pad[1] - width, 0, self.pad[0] - height))
        return self.net.vision_encoder(x)[0]

    def decode(self, embeddings: torch.Tensor, prompt: Prompt, size: tuple[int, int]):
        """(mask logits (N, 3, H, W) at `size`, predicted IoU scores (N, 3)) of one prompt on every image."""
        n, (height, width) = embeddings.shape[0], (int(size[0]), int(size[1]))
        kwargs = {}
        if prompt.points:
            points = embeddings.new_tensor(prompt.points, dtype=torch.float32)
            kwargs["input_points"] = to_model_coords(points, height, width, self.longest).expand(n, 1, -1, 2)
            kwargs["input_labels"] = torch.tensor(prompt.point_labels, device=embeddings.device).expand(n, 1, -1)
        if prompt.box is not None:
            box = embeddings.new_tensor(prompt.box, dtype=torch.float32).view(2, 2)
            kwargs["input_boxes"] = to_model_coords(box, height, width, self.longest).reshape(1, 1, 4).expand(n, 1, 4)
        out = self.net(image_embeddings=embeddings, multimask_output=True, **kwargs)
        return self.upscale(out.pred_masks[:, 0], (height, width)), out.iou_scores[:, 0]

    def upscale(self, low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Low-resolution mask logits -> the input's size, as SamImageProcessor.post_process_masks does."""
        frame = model_frame(size[0], size[1], self.longest)
        masks = F.interpolate(low, size=self.pad, mode="bilinear", align_corners=False)
        masks = masks[..., :frame[0], :frame[1]]
        return F.interpolate(masks, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embeddings = self.embed(x)
        if self.prompt is None:
            return embeddings
        return self.decode(embeddings, self.prompt, tuple(x.shape[-2:]))[0]


def sam_of(net: nn.Module) -> SamSegmenter:
    """The SamSegmenter inside a bundle's wrapped network."""
    found = next((m for m in net.modules() if isinstance(m, SamSegmenter)), None)
    if found is None:
        raise DeepprobeError("this model is not Segment Anything (hf:DIR with a SamModel)")
    return found


def load_sam(folder: Path):
    """(SamSegmenter, labels None, Preprocess) from a save_pretrained folder (model + SamProcessor), offline."""
    from transformers import SamModel

    from .hf_processor import load_saved, processor_config

    model = load_saved(SamModel, folder, f"cannot load Segment Anything from {folder}")
    cfg = processor_config(folder)
    longest = int((cfg.get("size") or {}).get("longest_edge", model.config.vision_config.image_size))
    pad = cfg.get("pad_size") or {}
    pad = (int(pad.get("height", longest)), int(pad.get("width", longest)))
    mean, std = tuple(cfg.get("image_mean", IMAGENET_MEAN)), tuple(cfg.get("image_std", IMAGENET_STD))
    # photos keep their size (the adapter resizes inside): prompts and masks are in the photo's own pixels
    pre = Preprocess(crop=None, resize=None, mean=mean, std=std, interpolation="bilinear")
    return SamSegmenter(model, longest, pad), None, pre
