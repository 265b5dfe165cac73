"""Tiny Segment Anything and Depth Anything models, and a depth net whose answer is known, for the tests.

No SAM or Depth Anything weights exist offline. The tests build tiny random ones from configs and save them
with save_pretrained (plus their image processor) exactly as a user saves facebook/sam-vit-base or
depth-anything-small-hf, so they load through `hf:DIR` like the real thing. Freshly initialised transformers
give outputs near 1e-6 (every mask logit about 0, every depth about 0); `_spread` redraws the weights at unit
gain so that masks and depths vary across the image as a trained model's do -- still random models.

`BrightnessDepth` (python:tests.tiny_foundation:brightness_depth) is a depth estimator with an analytic answer:
depth = exp(GAIN * (local mean brightness - 0.5)) through one fixed 5x5 averaging convolution, so darker is
nearer, a region's depth depends only on its own pixels (and a 2-pixel rim), and a factor f in depth is a
change of log(f) / GAIN in brightness.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SAM_SIZE = 128  # the tiny SAM's frame (the real one: 1024); patch 16 -> an 8x8 embedding
DEPTH_SIZE = 56  # the tiny Depth Anything's input (the real one: 518); patch 14 -> a 4x4 grid
GAIN = 8.0  # BrightnessDepth: log-depth per unit of brightness


def _spread(model: nn.Module, seed: int, gain: float = 1.0) -> nn.Module:
    """Redraw every linear and convolution weight with std gain / sqrt(fan-in) (biases small and random)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                w = module.weight
                fan_in = w.shape[0] * w[0, 0].numel() if isinstance(module, nn.ConvTranspose2d) else w[0].numel()
                w.copy_(torch.randn(w.shape, generator=g) * gain / math.sqrt(fan_in))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
    return model


# ------------------------------------------------------------------------------------------ Segment Anything
def build_sam(seed: int = 0, hidden: int = 32):
    """A SamModel with a 2-layer ViT encoder on a SAM_SIZE frame; SamVisionConfig's output_channels and
    num_pos_feats must match the prompt encoder's and mask decoder's hidden size."""
    from transformers import (SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig,
                              SamVisionConfig)

    vision = SamVisionConfig(hidden_size=32, output_channels=hidden, num_hidden_layers=2, num_attention_heads=2,
                             image_size=SAM_SIZE, patch_size=16, window_size=4, global_attn_indexes=[1],
                             num_pos_feats=hidden // 2, mlp_dim=64)
    prompt = SamPromptEncoderConfig(hidden_size=hidden, image_size=SAM_SIZE, patch_size=16, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64,
                                   iou_head_hidden_dim=32)
    torch.manual_seed(seed)
    model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder))
    return _spread(model, seed).eval()


def sam_processor():
    """SamProcessor for the tiny frame: long side to SAM_SIZE, padded to SAM_SIZE x SAM_SIZE."""
    from transformers import SamImageProcessor, SamProcessor

    low = SAM_SIZE // 4  # the mask decoder upsamples the embedding grid 4x
    return SamProcessor(image_processor=SamImageProcessor(
        size={"longest_edge": SAM_SIZE}, pad_size={"height": SAM_SIZE, "width": SAM_SIZE},
        mask_size={"longest_edge": low}, mask_pad_size={"height": low, "width": low}))


def save_sam(folder: Path, seed: int = 0) -> Path:
    build_sam(seed).save_pretrained(folder)
    sam_processor().save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------ Depth Anything
def build_depth_anything(seed: int = 0):
    """A DepthAnythingForDepthEstimation on a 4-layer DINOv2 backbone (patch 14); the head's last bias is
    raised so that the relative depth (after the head's ReLU) is positive almost everywhere."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=DEPTH_SIZE, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, patch_size=14,
                                 neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8)
    torch.manual_seed(seed)
    model = _spread(DepthAnythingForDepthEstimation(config), seed)
    with torch.no_grad():
        model.head.conv3.bias.fill_(20.0)
    return model.eval()


def depth_processor():
    """DPTImageProcessor as Depth Anything's: DEPTH_SIZE square target, aspect kept, multiples of 14, bicubic,
    ImageNet mean and std."""
    from transformers import DPTImageProcessor

    return DPTImageProcessor(size={"height": DEPTH_SIZE, "width": DEPTH_SIZE}, keep_aspect_ratio=True,
                             ensure_multiple_of=14, do_pad=False, resample=3, image_mean=[0.485, 0.456, 0.406],
                             image_std=[0.229, 0.224, 0.225])


def save_depth_anything(folder: Path, seed: int = 0) -> Path:
    build_depth_anything(seed).save_pretrained(folder)
    depth_processor().save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------ analytic depth
class BrightnessDepth(nn.Module):
    """depth = exp(GAIN * (5x5 mean of the grey level - 0.5)): (N,H,W), larger = farther, darker = nearer."""

    def __init__(self):
        super().__init__()
        self.blur = nn.Conv2d(3, 1, 5, padding=2, padding_mode="replicate", bias=False)
        with torch.no_grad():
            self.blur.weight.fill_(1 / 75)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(GAIN * (self.blur(x)[:, 0] - 0.5))


def brightness_depth() -> nn.Module:
    return BrightnessDepth()


def brightness_depth_of(x: torch.Tensor) -> torch.Tensor:
    """The same depth computed independently (no module): for checks against what deepprobe reports."""
    grey = F.pad(x.mean(1, keepdim=True), (2, 2, 2, 2), mode="replicate")
    return torch.exp(GAIN * (F.avg_pool2d(grey, 5, stride=1)[:, 0] - 0.5))
