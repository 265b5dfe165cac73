"""Tiny Hugging Face CLIP and DETR models trained in seconds on synthetic shapes, saved with save_pretrained.

No CLIP or DETR weights exist offline, so the tests (and docs/clip_detr.py) build their own: scenes of coloured
shapes on grey noise, a CLIP that learns to match "a red square" / "a blue circle" / "a green triangle" to them,
and a DETR that learns to box them. Both are saved to a folder exactly as a user saves a real checkpoint (model,
plus tokenizer and image processor for CLIP), so they load through `hf:DIR` like the real thing.
"""
from __future__ import annotations

import string
from pathlib import Path

import torch
import torch.nn.functional as F

# (colour name, shape name, RGB): the three things the tiny models learn
OBJECTS = [("red", "square", (0.9, 0.1, 0.1)), ("blue", "circle", (0.1, 0.2, 0.9)),
           ("green", "triangle", (0.1, 0.75, 0.2))]
CLASS_NAMES = [f"{c} {s}" for c, s, _ in OBJECTS]
PROMPTS = [f"a {name}" for name in CLASS_NAMES]
# the words the tokenizer knows (CLIP's --labels template "a photo of a {name}." included)
WORDS = ["a", "an", "photo", "of", "ostrich"] + [c for c, _, _ in OBJECTS] + [s for _, s, _ in OBJECTS]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ------------------------------------------------------------------------------------------ scenes
def shape_mask(kind: str, cy: torch.Tensor, cx: torch.Tensor, r: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size, size) bool masks of squares, circles or triangles centred at (cy, cx) with half-size r."""
    ar = torch.arange(size, dtype=torch.float32)
    yy, xx = ar.view(1, -1, 1), ar.view(1, 1, -1)
    cy, cx, r = (v.float().view(-1, 1, 1) for v in (cy, cx, r))
    if kind == "square":
        return ((yy - cy).abs() <= r) & ((xx - cx).abs() <= r)
    if kind == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= (1.15 * r) ** 2
    # an upward triangle: apex at the top, base at the bottom
    inside_y = (yy >= cy - r) & (yy <= cy + r)
    return inside_y & ((xx - cx).abs() <= (yy - (cy - r)) / 2)


def scenes(n: int, seed: int, size: int, objects_per_image: int = 1):
    """Grey-noise images with `objects_per_image` objects each (distinct classes, not overlapping).

    Returns (images (N,3,H,W) in [0,1], classes (N,k), boxes (N,k,4) xyxy in pixels, masks (N,k,H,W))."""
    g = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.08 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    k = objects_per_image
    classes = torch.stack([torch.randperm(len(OBJECTS), generator=g)[:k] for _ in range(n)])
    r = (size * (0.12 + 0.06 * torch.rand(n, k, generator=g))).round()
    # objects side by side in k vertical strips, so they never overlap
    strip = size / k
    cx = strip * torch.arange(k).view(1, k) + r + torch.rand(n, k, generator=g) * (strip - 2 * r - 1).clamp(min=0)
    cy = r + torch.rand(n, k, generator=g) * (size - 2 * r - 1)
    boxes = torch.stack([cx - r, cy - r, cx + r + 1, cy + r + 1], dim=-1)
    masks = torch.zeros(n, k, size, size, dtype=torch.bool)
    for j in range(k):
        for c, (_, kind, rgb) in enumerate(OBJECTS):
            sel = classes[:, j] == c
            if sel.any():
                m = shape_mask(kind, cy[sel, j], cx[sel, j], r[sel, j], size)
                masks[sel, j] = m
                colour = torch.tensor(rgb).view(1, 3, 1, 1)
                x[sel] = torch.where(m[:, None], colour, x[sel])
    return x, classes, boxes, masks


# ------------------------------------------------------------------------------------------ CLIP
def tiny_tokenizer():
    """A real CLIPTokenizer over a vocabulary of letters plus the words above, each one token."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for ch in string.ascii_lowercase + ".":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        # replay BPE on the word with the merges so far; where none applies, add one (lowest priority), so
        # every word ends as a single token whatever merges earlier words brought
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            ranks = {pair: i for i, pair in enumerate(merges)}
            pairs = [(ranks.get((a, b), len(merges)), i) for i, (a, b) in enumerate(zip(pieces, pieces[1:]))]
            rank, i = min(pairs)
            if rank == len(merges):
                i = 0
                merges.append((pieces[0], pieces[1]))
            pieces[i:i + 2] = [pieces[i] + pieces[i + 1]]
            vocab.setdefault(pieces[i], len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # the largest id, as in OpenAI's vocabulary
    return CLIPTokenizer(vocab=vocab, merges=merges)


def build_clip(size: int = 48, patch: int = 8, seed: int = 0):
    from transformers import CLIPConfig, CLIPModel

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=size, patch_size=patch),
        projection_dim=32)
    return CLIPModel(config), tok


def train_clip(steps: int = 120, size: int = 48, seed: int = 0):
    """A tiny CLIP that matches scenes to "a red square" etc. (CE over the class prompts, in both prompt forms,
    "a red square" and "a photo of a red square."); a few seconds on one core."""
    model, tok = build_clip(size, seed=seed)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    templates = [PROMPTS, [f"a photo of a {name}." for name in CLASS_NAMES]]
    encoded = [tok(t, padding=True, return_tensors="pt") for t in templates]
    # scenes of one object (target: its prompt) and of two (target: half each), so that each prompt's logit
    # depends on its own object when both are present
    one, y_one, _, _ = scenes(512, seed=seed, size=size)
    two, y_two, _, _ = scenes(512, seed=seed + 1, size=size, objects_per_image=2)
    x_all = torch.cat([one, two])
    p_all = torch.cat([F.one_hot(y_one[:, 0], len(OBJECTS)).float(),
                       F.one_hot(y_two, len(OBJECTS)).float().sum(1) / 2])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        i = torch.randint(0, len(x_all), (32,), generator=g)
        out = model(pixel_values=(x_all[i] - mean) / std, **encoded[step % 2])
        loss = F.cross_entropy(out.logits_per_image, p_all[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tok


def save_clip(model, tok, folder: Path, size: int = 48) -> Path:
    """Saved as a user saves openai/clip-*: model + CLIPProcessor (tokenizer and image processor)."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    model.save_pretrained(folder)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": size},
                                                                 crop_size={"height": size, "width": size}),
                              tokenizer=tok)
    processor.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------ DETR
DETR_MEAN = (0.485, 0.456, 0.406)
DETR_STD = (0.229, 0.224, 0.225)


def build_detr(queries: int = 4, seed: int = 0, spread: float = 0.0, width: int = 32, heads: int = 2):
    """A DetrForObjectDetection with a two-stage ResNet backbone (stride 8: an 8x8 feature grid at 64 px).

    `spread` > 0 redraws the query embeddings, the decoder's query and key projections and the class and box
    heads with larger weights, so that an untrained model already gives each query its own class scores and box
    (freshly initialised, every query attends uniformly to the image and they all give the same output)."""
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    torch.manual_seed(seed)
    backbone = ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                            layer_type="basic", out_features=["stage2"])
    config = DetrConfig(use_timm_backbone=False, backbone_config=backbone, d_model=width, encoder_layers=1,
                        decoder_layers=2, encoder_attention_heads=heads, decoder_attention_heads=heads,
                        encoder_ffn_dim=2 * width, decoder_ffn_dim=2 * width, num_queries=queries, dropout=0.0,
                        id2label=dict(enumerate(CLASS_NAMES)), label2id={n: i for i, n in enumerate(CLASS_NAMES)})
    model = DetrForObjectDetection(config)
    if spread:
        with torch.no_grad():
            model.model.query_position_embeddings.weight.normal_(0, 1.0)
            for layer in model.model.decoder.layers:
                for attention in (layer.self_attn, layer.encoder_attn):
                    attention.q_proj.weight.normal_(0, 0.3)
                    attention.k_proj.weight.normal_(0, 0.3)
            for module in (model.class_labels_classifier, *model.bbox_predictor.layers):
                module.weight.normal_(0, spread)
                module.bias.normal_(0, spread)
    return model.eval()


def train_detr(steps: int = 1500, size: int = 64, seed: int = 0, lr: float = 1e-3):
    """A tiny DETR that boxes the two objects of each scene (minutes on one core: for docs/, not the tests;
    1500 steps reach a mean IoU of 0.8 with the true boxes and the right class on 99% of them).

    The matching is fixed instead of Hungarian: query 0 takes the left object, query 1 the right one, the other
    queries learn "no object" (the scenes always hold two objects in two vertical strips); losses as DETR's:
    cross-entropy + 5 L1 + 2 generalized IoU on the boxes."""
    from torchvision.ops import box_convert, generalized_box_iou

    model = build_detr(seed=seed, width=64, heads=4)
    mean, std = torch.tensor(DETR_MEAN).view(1, 3, 1, 1), torch.tensor(DETR_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        model.model.query_position_embeddings.weight.normal_(0, 1.0)
    x_all, c_all, b_all, _ = scenes(2048, seed=seed, size=size, objects_per_image=2)
    queries = model.config.num_queries
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        i = torch.randint(0, len(x_all), (32,), generator=g)
        out = model(pixel_values=(x_all[i] - mean) / std)
        target = torch.full((len(i), queries), len(CLASS_NAMES))
        target[:, :2] = c_all[i]
        predicted = box_convert(out.pred_boxes[:, :2], "cxcywh", "xyxy").flatten(0, 1)
        truth = (b_all[i] / size).flatten(0, 1)
        loss = (F.cross_entropy(out.logits.flatten(0, 1), target.flatten())
                + 5 * (predicted - truth).abs().sum(-1).mean()
                + 2 * (1 - torch.diag(generalized_box_iou(predicted, truth))).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def save_detr(model, folder: Path, size: int = 64) -> Path:
    """Saved as a user saves facebook/detr-*: the model and its image processor (resize to `size`)."""
    from transformers import DetrImageProcessor

    model.save_pretrained(folder)
    DetrImageProcessor(size={"shortest_edge": size, "longest_edge": size * 3 // 2}).save_pretrained(folder)
    return folder
