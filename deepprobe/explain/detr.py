"""Chefer's encoder-decoder relevance for DETR: which image features each detected object was found from.

Chefer, Gur & Wolf (ICCV 2021), the rules their DETR code applies (gradient-weighted attention, no LRP):
per attention map A-bar = mean over heads of (grad * A)^+, with grad = d(the object's class logit)/dA;
R_ii = I (image tokens), R_qq = I (queries), R_qi = 0;
encoder self-attention: R_ii += A-bar R_ii;
decoder self-attention: R_qq += A-bar R_qq and R_qi += A-bar R_qi;
decoder cross-attention: R_qi += norm(R_qq)^T A-bar norm(R_ii), norm(R) = (R - I) / rowsum(R - I) + I.
The object's map is its query's row R_qi[q] on the h x w feature grid. One backward pass per object.

One deliberate difference: where a row of R - I is all zero, their normalization divides 0 by 0 and the NaN
then zeroes the whole cross-attention term of that layer; here such a row stays a row of I.
"""
from __future__ import annotations

import torch

from ..errors import DeepprobeError
from .transformer import chefer_cam


def _normalized(r: torch.Tensor) -> torch.Tensor:
    """norm(R) = (R - I) / rowsum(R - I) + I, a zero row left as a row of I."""
    eye = torch.eye(r.shape[-1], device=r.device, dtype=r.dtype)
    extra = r - eye
    total = extra.sum(-1, keepdim=True)
    return torch.where(total > 0, extra / total.clamp_min(torch.finfo(r.dtype).tiny), torch.zeros_like(extra)) + eye


def encoder_decoder_relevance(encoder: list[torch.Tensor], decoder_self: list[torch.Tensor],
                              cross: list[torch.Tensor]) -> torch.Tensor:
    """R_qi (Q, T) from one image's per-layer A-bar maps: encoder (T,T), decoder self (Q,Q), cross (Q,T)."""
    if not encoder or not cross or len(decoder_self) != len(cross):
        raise DeepprobeError("encoder-decoder relevance needs encoder maps and one self and one cross map per "
                             "decoder layer")
    tokens, queries = encoder[0].shape[-1], cross[0].shape[-2]
    device = encoder[0].device
    r_ii = torch.eye(tokens, device=device)
    for a in encoder:
        r_ii = r_ii + a.float() @ r_ii
    r_qq = torch.eye(queries, device=device)
    r_qi = torch.zeros(queries, tokens, device=device)
    image = _normalized(r_ii)
    for self_map, cross_map in zip(decoder_self, cross):
        self_map = self_map.float()
        r_qq, r_qi = r_qq + self_map @ r_qq, r_qi + self_map @ r_qi
        r_qi = r_qi + _normalized(r_qq).t() @ cross_map.float() @ image
    return r_qi


def detr_module(probe):
    """The DetrDetector inside a bundle's network, or None."""
    from ..models.detr import DetrDetector

    return next((m for m in probe.net.modules() if isinstance(m, DetrDetector)), None)


def is_detr(probe) -> bool:
    return detr_module(probe) is not None


def _gradients(score: torch.Tensor, maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """d score / d map for each map (zero for a map the score does not depend on)."""
    live = [i for i, a in enumerate(maps) if a.requires_grad]
    with torch.enable_grad():
        found = torch.autograd.grad(score, [maps[i] for i in live], retain_graph=True, allow_unused=True)
    grads = [torch.zeros_like(a) for a in maps]
    for i, g in zip(live, found):
        if g is not None:
            grads[i] = g
    return grads


def detr_relevance(probe, x: torch.Tensor, classes: list[int] | None = None, min_score: float = 0.5) -> list:
    """Per image, a BoxMaps: the boxes DETR finds at or above `min_score` (of `classes` if given), best first,
    and each box's relevance map R_qi[query] resized to the input, in [0, 1]."""
    from ..models.detr import detections_of
    from ..models.outputs import Detections
    from .maps import BoxMaps, to_input_size

    detector = detr_module(probe)
    if detector is None:
        raise DeepprobeError(f"encoder-decoder relevance (chefer) needs a DETR model (hf:DIR); {probe.spec} is not one")
    x = x.to(probe.device)
    height, width = int(x.shape[-2]), int(x.shape[-1])
    grids: list[tuple[int, int]] = []
    hook = detector.net.model.input_projection.register_forward_hook(
        lambda _m, _i, out: grids.append((int(out.shape[-2]), int(out.shape[-1]))))
    # The first decoder layer's self-attention reads only the learned queries, not the image: with frozen
    # weights autograd would not record it, yet the score depends on it. Let the queries carry gradients.
    queries = detector.net.model.query_position_embeddings.weight
    was_frozen = not queries.requires_grad
    queries.requires_grad_(True)
    results = []
    try:
        for image in x:
            inp = ((image[None] - probe.net.mean) / probe.net.std).detach().requires_grad_(True)
            with torch.enable_grad():
                out = detector.raw(inp, output_attentions=True)
            found = detections_of(out.logits.detach(), out.pred_boxes.detach(), height, width)[0]
            keep = found["scores"] >= min_score
            if classes is not None:
                keep &= torch.isin(found["labels"], torch.tensor(classes, device=keep.device))
            maps_in = [*out.encoder_attentions, *out.decoder_attentions, *out.cross_attentions]
            n_enc, n_dec = len(out.encoder_attentions), len(out.decoder_attentions)
            maps = []
            for q, label in zip(found["queries"][keep].tolist(), found["labels"][keep].tolist()):
                grads = _gradients(out.logits[0, q, label], maps_in)
                cams = [chefer_cam(a.detach(), g)[0] for a, g in zip(maps_in, grads)]
                r_qi = encoder_decoder_relevance(cams[:n_enc], cams[n_enc:n_enc + n_dec], cams[n_enc + n_dec:])
                maps.append(to_input_size(r_qi[q].reshape(grids[-1])[None], (height, width))[0].cpu())
            labels = found["labels"][keep].cpu()
            det = Detections(found["boxes"][keep].cpu(), labels, found["scores"][keep].cpu(),
                             [probe.class_name(int(c)) for c in labels])
            results.append(BoxMaps(det, torch.stack(maps) if maps else torch.zeros(0, height, width)))
    finally:
        hook.remove()
        queries.requires_grad_(not was_frozen)
    return results
