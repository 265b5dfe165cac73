"""deepprobe: fool, visualize and explain trained image networks.

The public API is re-exported lazily so `import deepprobe` (and `deepprobe --help`) never imports torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> "module:attribute"; techniques add themselves here.
_EXPORTS = {
    "load_model": "deepprobe.models:load_model",
    "ModelBundle": "deepprobe.models:ModelBundle",
    "DeepprobeError": "deepprobe.errors:DeepprobeError",
    "read_image": "deepprobe.io:read_image",
    "find_images": "deepprobe.io:find_images",
    "classify": "deepprobe.techniques.classify:classify",
    "attack": "deepprobe.techniques.fool:attack",
    "fool_detector": "deepprobe.techniques.fool_tasks:fool_detector",
    "fool_segmenter": "deepprobe.techniques.fool_tasks:fool_segmenter",
    "detect": "deepprobe.models.outputs:detect",
    "segment": "deepprobe.models.outputs:segment",
    "fool_from_noise": "deepprobe.techniques.noise:fool_from_noise",
    "train_patch": "deepprobe.techniques.patch:train_patch",
    "apply_patch": "deepprobe.techniques.patch:apply_patch",
    "invert": "deepprobe.techniques.invert:invert",
    "maximize": "deepprobe.techniques.maximize:maximize",
    "dream": "deepprobe.techniques.dream:dream",
    "style": "deepprobe.techniques.style:style",
    "age": "deepprobe.techniques.age:age",
    "estimate_age": "deepprobe.techniques.age:estimate_age",
    "explain": "deepprobe.explain:explain",
    "text_relevance": "deepprobe.explain.clip:text_relevance",
    "attention_heads": "deepprobe.explain.transformer:attention_heads",
    "prompts_from_labels": "deepprobe.models.clip:prompts_from_labels",
    "evaluate": "deepprobe.explain.evaluate:evaluate",
    "robustness": "deepprobe.techniques.robustness:robustness",
    "embed": "deepprobe.models.embedding:embed",
    "feature_attack": "deepprobe.techniques.fool_embedding:feature_attack",
    "build_gallery": "deepprobe.techniques.knn:build_gallery",
    "knn_classify": "deepprobe.techniques.knn:knn_classify",
    "Prompt": "deepprobe.models.sam:Prompt",
    "segment_prompts": "deepprobe.models.sam_masks:segment_prompts",
    "fool_prompt": "deepprobe.techniques.fool_prompt:fool_prompt",
    "estimate_depth": "deepprobe.models.depth:estimate_depth",
    "fool_depth": "deepprobe.techniques.fool_depth:fool_depth",
    "depth_robustness": "deepprobe.techniques.depth_robustness:depth_robustness",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deepprobe' has no attribute {name!r}")
    module, _, attr = _EXPORTS[name].partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
