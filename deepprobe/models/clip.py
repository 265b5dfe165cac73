"""CLIP as a zero-shot classifier: image -> logits over a set of text prompts.

Why a classifier: once the prompts are fixed, CLIP's image-text logits (logit_scale * cosine of the image and
text embeddings) are ordinary class logits, so classify, Grad-CAM, captum, rollout, Chefer, the attacks and the
faithfulness metrics work on CLIP unchanged. The text embeddings are computed once per prompt set (they do not
depend on the image); the image tower runs on every call. The text tower itself is explained by
`deepprobe.explain.clip.text_relevance`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepprobeError
from .tasks import IMAGE_TEXT

# OpenAI CLIP's normalization (the same in every CLIP checkpoint's preprocessor config)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The prompt a class name becomes (`--labels FILE`), as in CLIP's zero-shot ImageNet evaluation
PROMPT_TEMPLATE = "a photo of a {}."
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")  # fast (tokenizers) or BPE vocabulary + merges


def prompts_from_labels(names: Sequence[str], template: str = PROMPT_TEMPLATE) -> list[str]:
    """Class names -> CLIP prompts ("ostrich" -> "a photo of a ostrich.")."""
    return [template.format(name) for name in names]


def _embedding(out) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output is projected (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ZeroShotCLIP(nn.Module):
    """A Hugging Face CLIPModel (`.net`) with a prompt set: forward(normalized pixels) -> (N, prompts) logits.

    Without prompts the forward pass returns the normalized image embeddings (what `deepprobe layers` sees).
    """

    task = IMAGE_TEXT

    def __init__(self, model: nn.Module, tokenizer):
        super().__init__()
        self.net = model
        self.tokenizer = tokenizer
        self.prompts: list[str] = []
        self.register_buffer("text_embeds", torch.zeros(0, 1), persistent=False)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask on the model's device, padded, cut to the text tower's length."""
        if not texts or any(not str(t).strip() for t in texts):
            raise DeepprobeError("CLIP prompts must be non-empty texts")
        limit = getattr(self.net.config.text_config, "max_position_embeddings", 77)
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")
        device = self.net.logit_scale.device
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length text embeddings (P, D); differentiable (the caller decides about no_grad)."""
        return F.normalize(_embedding(self.net.get_text_features(**self.tokenize(texts))).float(), dim=-1)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unit-length image embeddings (N, D) of normalized pixels."""
        return F.normalize(_embedding(self.net.get_image_features(pixel_values=pixel_values)).float(), dim=-1)

    @torch.no_grad()
    def set_prompts(self, texts: Sequence[str]) -> None:
        self.text_embeds = self.text_features(texts).detach()
        self.prompts = list(texts)

    def scale(self) -> torch.Tensor:
        return self.net.logit_scale.exp().float()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        image = self.image_features(pixel_values)
        if not self.prompts:
            return image
        logits = self.scale() * image @ self.text_embeds.t()
        bias = getattr(self.net, "logit_bias", None)  # SigLIP-style checkpoints add one
        return logits + bias.float() if bias is not None else logits


def load_clip(folder: Path):
    """(ZeroShotCLIP, labels None, image geometry + CLIP normalization) from a save_pretrained folder."""
    from transformers import AutoTokenizer, CLIPModel

    from .hf_processor import image_preprocess, processor_config
    from .preprocess import Preprocess

    # transformers 5 builds an empty tokenizer when the files are missing; ask for them instead
    missing = DeepprobeError(f"{folder} holds a CLIP model but no tokenizer: save the processor too "
                             "(CLIPProcessor.from_pretrained(name).save_pretrained(DIR))")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise missing
    model = CLIPModel.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise missing from exc
    size = model.config.vision_config.image_size
    if processor_config(folder):
        pre = image_preprocess(folder, size, CLIP_MEAN, CLIP_STD)
    else:  # no processor saved: CLIP's own geometry (short side to the input size, centre crop)
        pre = Preprocess(crop=(size, size), resize=size, mean=CLIP_MEAN, std=CLIP_STD)
    return ZeroShotCLIP(model, tokenizer), None, pre


def zero_shot_head(net: nn.Module) -> ZeroShotCLIP | None:
    """The ZeroShotCLIP inside a bundle's wrapped network, if there is one."""
    return next((m for m in net.modules() if isinstance(m, ZeroShotCLIP)), None)
