"""Chefer's bi-modal relevance on CLIP's text tower: which words of a prompt made it match the image.

The image side needs nothing of its own: with the prompts fixed, `chefer` on the zero-shot bundle is the
bi-modal rule on the image tower (score = the matched image-text logit, R = I, R <- R + A-bar R per block,
map R[0, 1:]), because the text embeddings do not depend on the image. The text side runs the text tower with
gradients: the same score, the same rule per text block, read at the end-of-text token that CLIP pools,
R[eot, 1:eot] (start and end tokens left out).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DeepprobeError
from .attention_capture import _eager
from .transformer import chefer_cam, relevance_rows


@dataclass
class TextRelevance:
    """One prompt's relevance per token, for one image."""

    prompt: str
    tokens: list[str]  # the prompt's tokens between the start and end tokens
    scores: list[float]  # R[eot, token], same order; not normalized

    def as_dict(self) -> dict:
        return {"prompt": self.prompt, "tokens": [{"token": t, "relevance": round(s, 6)}
                                                  for t, s in zip(self.tokens, self.scores)]}

    def line(self) -> str:
        """'a 0.03 · red 0.41 · square 1.00' with scores divided by the largest one."""
        top = max(self.scores, default=0.0) or 1.0
        return " · ".join(f"{t} {s / top:.2f}" for t, s in zip(self.tokens, self.scores))


def pooled_positions(input_ids: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """Where CLIP's text tower pools (the end-of-text token), per row: the argmax of the ids in the original
    CLIP vocabulary (eos has the largest id), else the first eos token, as transformers does."""
    if eos_token_id is None or eos_token_id == 2:
        return input_ids.argmax(-1)
    return (input_ids == eos_token_id).int().argmax(-1)


def prompt_inputs(probe, x: torch.Tensor, target=None):
    """What explaining CLIP's prompts starts from (Chefer's and AttnLRP's text relevance alike): the zero-shot
    head, each image's target prompt index and text, the fixed image features and the tokenized prompts."""
    from ..models.clip import zero_shot_head
    from .maps import resolve_targets

    head = zero_shot_head(probe.net)
    if head is None or not head.prompts:
        raise DeepprobeError(f"text relevance needs an image-text model with prompts; {probe.spec} has none")
    x = x.to(probe.device)
    targets = resolve_targets(probe, x, target)
    texts = [head.prompts[int(t)] for t in targets]
    with torch.no_grad():
        image = head.image_features((x - probe.net.mean) / probe.net.std)
    return head, targets, texts, image, head.tokenize(texts)


def text_relevance(probe, x: torch.Tensor, target=None) -> list[TextRelevance]:
    """Per image, the relevance of each token of its target prompt (None: the predicted prompt)."""
    head, targets, texts, image, enc = prompt_inputs(probe, x, target)
    model = head.net
    # the weights are frozen and token ids are integers: make the token embeddings the leaf autograd starts at
    hook = model.text_model.embeddings.register_forward_hook(lambda _m, _i, out: out.detach().requires_grad_(True))
    try:
        with _eager(model), torch.enable_grad():
            out = model.text_model(**enc, output_attentions=True)
    finally:
        hook.remove()
    with torch.enable_grad():
        attentions = list(out.attentions)
        text = torch.nn.functional.normalize(model.text_projection(out.pooler_output).float(), dim=-1)
        score = (head.scale() * (image * text).sum(-1)).sum()  # the matched image-text logits
        grads = torch.autograd.grad(score, attentions, allow_unused=True)
    cams = [chefer_cam(a.detach(), torch.zeros_like(a) if g is None else g) for a, g in zip(attentions, grads)]
    eot = pooled_positions(enc["input_ids"], getattr(model.config.text_config, "eos_token_id", None))
    rows = relevance_rows(cams, eot)
    result = []
    for i, prompt in enumerate(texts):
        end = int(eot[i])
        ids = enc["input_ids"][i, 1:end].tolist()
        tokens = [head.tokenizer.decode([t]).strip() for t in ids]
        result.append(TextRelevance(prompt, tokens, rows[i, 1:end].tolist()))
    return result
