"""Fooling Segment Anything: the object's mask vanishes for the same prompt, inside an L-inf budget.

The goal is read on SAM's own choice: for the same prompt, the mask SAM picks on the adversarial image (its
highest predicted IoU) overlaps the clean chosen mask by IoU < VANISH_IOU. Since SAM may pick any of its three
candidates, the loss pushes all three below -margin on the clean mask's pixels (a hinge averaged over them), and
the optimization stops once every candidate is off the object. It runs on the loop detectors and segmenters
use (techniques/fool_tasks.py): PGD (signed steps in the eps ball; DAG's unbounded steps on request), judged on
the 8-bit image, with extra rounds at a doubled margin for images whose saved version still shows the mask.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import engine as E
from ..models import ModelBundle
from ..models.sam import Prompt, sam_of
from ..models.sam_masks import mask_iou, segment_prompts
from ..models.tasks import PROMPTABLE_SEGMENTATION, require_task
from ..options.fool import FOUNDATION_STEPS, Options
from ..options.ranges import check_ranges
from .fool_tasks import TaskAttackResult, as_batch, attack_rounds

VANISH_IOU = 0.1  # the mask is gone when SAM's chosen mask overlaps the clean one by less than this


def fool_prompt(bundle: ModelBundle, x: torch.Tensor, prompt: Prompt, *, method: str = "pgd",
                eps: float | None = None, alpha: float | None = None, steps: int | None = None,
                kappa: float = Options.kappa, rounds: int = 2, seed: int = 0,
                callback: Callable | None = None) -> TaskAttackResult:
    """Make SAM's mask for `prompt` (in the images' pixels) vanish on each image of a (N,3,H,W) batch in
    [0,1]: success when the chosen mask's IoU with the clean one is under VANISH_IOU. `kappa` is the logit
    margin below SAM's threshold the object's pixels are pushed to."""
    check_ranges("fool", {"eps": eps, "alpha": alpha, "steps": steps, "kappa": kappa, "rounds": rounds})
    require_task(bundle, "fool_prompt", PROMPTABLE_SEGMENTATION)
    x = as_batch(bundle, x)
    before = [found[0] for found in segment_prompts(bundle, x, [prompt])]
    clean = torch.stack([b.mask for b in before]).to(x.device)  # (N,H,W) the chosen clean masks

    def objective(margin: float, todo) -> E.Objective:
        def loss(f):
            on = clean[todo][:, None].to(f.logits.dtype)  # every candidate, on the object's pixels
            return (F.relu(f.logits.float() + margin) * on).sum((1, 2, 3)) / on.sum((1, 2, 3)).clamp_min(1)
        return E.Objective(loss, f"vanish({prompt.describe()})", needs_logits=True)

    def done(margin: float, todo) -> Callable:
        def check(f):
            kept = f.logits.detach() > -margin  # (n,3,H,W): what could still count as mask after rounding
            return (mask_iou(kept, clean[todo][:, None]) < VANISH_IOU).all(1).cpu()
        return check

    def judge(images: torch.Tensor):
        after = [found[0] for found in segment_prompts(bundle, images, [prompt])]
        iou = torch.stack([mask_iou(a.mask, b.mask) for a, b in zip(after, before)])
        left = torch.stack([(a.mask & b.mask).sum() / b.mask.sum().clamp_min(1) for a, b in zip(after, before)])
        # clean_area 0: SAM found nothing for the prompt, so there was nothing to hide
        notes = [{"iou_with_clean": round(float(v), 6), "vanish_iou": VANISH_IOU,
                  "clean_area": round(float(b.mask.float().mean()), 6)} for v, b in zip(iou, before)]
        return iou < VANISH_IOU, 1 - left.float(), after, notes

    with sam_of(bundle.net).prompted(prompt):
        return attack_rounds(bundle, x, before, f"vanish {prompt.describe()}", objective, done, judge,
                             lambda attempt: kappa * 2 ** attempt, method=method, eps=eps, alpha=alpha,
                             steps=steps or FOUNDATION_STEPS, rounds=rounds, seed=seed, callback=callback)
