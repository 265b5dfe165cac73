"""What Segment Anything found for a prompt: its three candidate masks and their predicted IoU scores.

`segment_prompts(bundle, x, prompts)` computes each image's embedding once and decodes every prompt from it
(SAM's design: the vision encoder is the costly part, the prompt encoder and mask decoder are light).
The "chosen" mask is the candidate SAM scores highest (its predicted IoU), as SAM's own predictor picks it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..display import Shows
from .sam import Prompt, sam_of
from .tasks import PROMPTABLE_SEGMENTATION, require_task

MASK_THRESHOLD = 0.0  # SAM's: a pixel is in the mask where its logit is above 0


@dataclass
class PromptMasks(Shows):
    """SAM's three candidates for one prompt on one image: masks (3,H,W) bool, logits (3,H,W), scores (3,). In
    Jupyter: `classify --point/--box`'s panel, the prompt | each mask with its predicted IoU score."""

    prompt: Prompt
    masks: torch.Tensor
    logits: torch.Tensor
    scores: torch.Tensor

    def figure(self):
        from ..figures.foundation import prompt_masks_figure

        image, name = self._needs("image", "name")
        return prompt_masks_figure(image, self, name)

    @property
    def chosen(self) -> int:
        return int(self.scores.argmax())

    @property
    def mask(self) -> torch.Tensor:
        """The chosen candidate's (H,W) bool mask."""
        return self.masks[self.chosen]

    def records(self) -> list[dict]:
        total = self.masks[0].numel()
        return [{"candidate": k, "iou_score": round(float(s), 6), "area": round(float(m.sum()) / total, 6),
                 "box": mask_box(m), "chosen": k == self.chosen}
                for k, (m, s) in enumerate(zip(self.masks, self.scores))]

    def as_dict(self) -> dict:
        return {"prompt": self.prompt.describe(), "chosen": self.chosen, "masks": self.records()}


def mask_box(mask: torch.Tensor) -> list[int] | None:
    """The (x0, y0, x1, y1) pixel box around a (H,W) bool mask (x1, y1 exclusive); None when it is empty."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if not len(ys):
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of (..., H, W) bool masks over the last two dimensions (0 when both are empty)."""
    inter = (a & b).flatten(-2).sum(-1).float()
    union = (a | b).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(union))


@torch.no_grad()
def segment_prompts(bundle, images: torch.Tensor, prompts: Sequence[Prompt]) -> list[list[PromptMasks]]:
    """Per image of a (N,3,H,W) batch in [0,1], per prompt (in the images' pixels): SAM's three masks and
    scores. The vision encoder runs once per image, whatever the number of prompts."""
    require_task(bundle, "segment_prompts", PROMPTABLE_SEGMENTATION)
    sam = sam_of(bundle.net)
    images = images.to(bundle.device)
    size = tuple(images.shape[-2:])
    for prompt in prompts:
        prompt.check(*size)
    with sam.prompted(None):
        embeddings = bundle.net(images)  # no prompt: the forward pass stops at the image embeddings
    found: list[list[PromptMasks]] = [[] for _ in range(images.shape[0])]
    for prompt in prompts:
        logits, scores = sam.decode(embeddings, prompt, size)
        for i in range(images.shape[0]):
            found[i].append(PromptMasks(prompt, (logits[i] > MASK_THRESHOLD).cpu(), logits[i].float().cpu(),
                                        scores[i].float().cpu())._attach(image=images[i].detach(), name=f"image {i}"))
    return found
