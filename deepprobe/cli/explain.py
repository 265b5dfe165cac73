"""`deepprobe explain`: heat maps of what a network looked at, for CNNs (CAMs, captum) and vision transformers."""
from __future__ import annotations

import importlib
from pathlib import Path

import typer

from ..errors import DeepprobeError
from ..options.explain import (BLOCK_METHODS, CAM_METHODS, CLASS_FREE, COMPOSITES, DEFAULT_METHODS, LAYER_METHODS,
                               METHOD_OPTIONS, Options, default_methods, method_kwargs)
from . import app
from .common import command, opt, out_console
from .gallery import EMBEDDERS
from .prompts import apply_prompts, labels_option, text_option
from .regions import box_option, point_option, refuse_spatial, region_option

# CLIP: methods that also score the words of each prompt -> "module:function" in deepprobe.explain
WORD_METHODS = {"chefer": "clip:text_relevance", "attnlrp": "attnlrp:attnlrp_text_relevance"}


@command(app, "explain")
def explain_cmd(run, images: list[str] = typer.Argument(..., help="Photos to explain (files, folders or globs)."),
                method: list[str] = opt(Options, "method", help="Cost per image in brackets (F = one forward "
                                        "pass, B = one backward pass, C = channels of the layer: 1280 at Lite0's "
                                        "bn2). Any model: gradcam, gradcam++, hirescam, xgradcam, layercam [F+B], "
                                        "eigencam [F, class-free], scorecam, ablationcam [F per channel: C+1 F, "
                                        "slow; --internal-batch at once], fullgrad [F+B], saliency, guided-backprop "
                                        "[F+B], ig [--steps x (F+B)], smoothgrad [--samples x (F+B)], occlusion "
                                        "[F per window]. CNNs: lrp (Zennit, --composite) [F+B with rules, 4-9x F+B]. "
                                        "Vision transformers: rollout, attention [F], chefer [F+B], attnlrp (LXT) "
                                        "[F+B with rules, 3-5x F+B], legrad [F + a short B per block]. Repeat for "
                                        "several; default "
                                        f"{', '.join(DEFAULT_METHODS)} (hirescam on detectors)."),
                target: list[str] = opt(Options, "target", help="Class to explain (name or index); repeat for "
                                                                "several. Default: each image's predicted class."),
                layer: str = opt(Options, "layer", help="CAM layer (see `deepprobe layers`; default: the last "
                                                        "spatial map, printed); attention: a block index; legrad: "
                                                        "the first block averaged (default: the last 4)."),
                batch_size: int = opt(Options, "batch_size", help="Images per batch."),
                steps: int = opt(Options, "steps", help="ig: interpolation steps from the black baseline."),
                internal_batch: int = opt(Options, "internal_batch", help="ig/smoothgrad/occlusion/scorecam/"
                                          "ablationcam: most forward passes run together (memory)."),
                samples: int = opt(Options, "samples", help="smoothgrad: noisy copies averaged."),
                noise: str = opt(Options, "noise", help="smoothgrad: noise std as a fraction of the pixel range."),
                window: int = opt(Options, "window", help="occlusion: window size in pixels (0 = 1/7 of the "
                                                          "short side)."),
                stride: int = opt(Options, "stride", help="occlusion: window step in pixels (0 = half the window)."),
                head_fusion: str = opt(Options, "head_fusion", help="rollout: fuse heads by mean|max|min."),
                discard_ratio: str = opt(Options, "discard_ratio", help="rollout: share of the lowest attentions "
                                                                        "dropped per row (CLS column kept)."),
                head: int = opt(Options, "head", help="attention: show this head instead of the mean."),
                composite: str = opt(Options, "composite", help=f"lrp: Zennit's composite, {'|'.join(COMPOSITES)}."),
                conv_gamma: str = opt(Options, "conv_gamma", help="attnlrp: Gamma of the convolutions (patch "
                                                                  "embedding)."),
                lin_gamma: str = opt(Options, "lin_gamma", help="attnlrp: Gamma of the MLP and head linear layers "
                                                                "(0: plain gradient x input)."),
                alpha: str = opt(Options, "alpha", help="Opacity of the heat map over the photo."),
                min_score: str = opt(Options, "min_score", help="Detectors: explain each box at or above this "
                                                                "score."),
                reference: str = typer.Option(None, "--reference", help="Embedders: explain where each image "
                                              "resembles this one (the cosine similarity of their embeddings).",
                                              rich_help_panel=EMBEDDERS),
                text: list[str] = text_option(), labels: str = labels_option(),
                point: list[str] = point_option(), box: list[str] = box_option(),
                region: str = region_option("whose depth to explain (default: the whole image)")):
    """Explain each image's decision with one or more methods (the CAM family, captum, LRP, ViT attention).

    Writes per image and class NAME_METHOD_CLASS.png
    (heat map over the photo, captioned with method, class, probability and layer), NAME_METHOD_CLASS.npy (the
    map, HxW in [0,1] at the model's input size), with several methods NAME_CLASS_panel.png (input | each
    method), with `attention` NAME_attention_heads.png (one tile per head), and JSON sidecars.

    Detectors: one map per box at or above --min-score (of the --target classes if given), drawn with its box:
    NAME_METHOD_boxK_CLASS.png/.npy. Segmenters: the map of each --target class (default: the largest one) over
    the pixels the model gives it: NAME_METHOD_CLASS.png/.npy. Both with a panel when several methods run.

    CLIP (hf:DIR): every --text/--labels prompt is explained (or only the --target ones); `chefer` and `attnlrp`
    then also score each word of the prompt (their rules on the text tower), printed and saved.
    DETR (hf:DIR): `chefer` is Chefer's encoder-decoder relevance of each box's query.

    Embedders (a backbone without a head: DINO, DINOv2, CLIP's or SigLIP's image tower): `attention` draws the CLS
    token's attention of every head (NAME_attention_heads.png, DINO's figure), `rollout` works as on any ViT;
    with --reference IMG, `similarity` (Chefer on ViTs, Grad-CAM on CNNs; or any other method) maps where each
    image resembles IMG: NAME_METHOD_vs_REF.png shows both images with their maps and the cosine.

    Segment Anything (hf:DIR): per --point/--box prompt, what drives the mask SAM chooses (its logits summed
    over the mask): NAME_METHOD_sam_K.png/.npy. Depth estimators: what drives the mean depth of --region
    (default: the whole image): NAME_METHOD_depth_REGION.png/.npy. HiResCAM by default on both."""
    from ..explain import method_function
    from ..explain.detr import is_detr
    from ..models.bundle import require_classifier
    from ..models.tasks import describe_task
    from .inputs import batches, image_paths

    opts = run.options
    _check(opts)
    for name in opts.method:
        method_function(name)  # unknown methods fail here, listing the known ones
    bundle = run.bundle()
    prompts = apply_prompts(run, bundle, text, labels)
    refuse_spatial(bundle, point, box, region)
    if bundle.task == "embedding":
        from .explain_embedding import explain_embedder_images

        return explain_embedder_images(run, bundle, images, opts, reference)
    if reference:
        raise DeepprobeError(f"--reference applies to embedders; {bundle.spec} is {describe_task(bundle.task)}")
    # DETR is explained through its own attention by default
    opts.method = opts.method or (["chefer"] if is_detr(bundle) else default_methods(bundle.task))
    if bundle.task == "promptable-segmentation":
        from .sam_tasks import explain_prompts

        return explain_prompts(run, bundle, images, opts, point, box)
    if bundle.task == "depth":
        from .depth_tasks import explain_depth

        return explain_depth(run, bundle, images, opts, region)
    if bundle.task in ("detection", "segmentation"):
        from .explain_tasks import explain_task_images

        return explain_task_images(run, bundle, images, opts)
    targets: list[int | None] = [None]
    if opts.target or any(m not in CLASS_FREE for m in opts.method):
        require_classifier(bundle)
    if opts.target:
        targets = list(dict.fromkeys(bundle.class_index(t) for t in opts.target))  # typos fail here
    elif prompts:
        targets = list(range(len(prompts)))  # CLIP: a map for each prompt
    if opts.layer and any(m in CAM_METHODS for m in opts.method):
        bundle.layer(opts.layer)  # unknown layers fail here, once, with suggestions
    paths = image_paths(run, images)
    explainer = _Explainer(run, bundle, opts, targets)
    with run.progress() as progress:
        task = progress.add_task("explain", total=len(paths) * len(opts.method), info="")
        for chunk_paths, x in batches(run, bundle, paths, opts.batch_size):
            explainer.batch(chunk_paths, x, progress, task)
    run.summary.update(methods=list(opts.method), cam_layer=explainer.cam_layer)
    explainer.show()


def _check(opts: Options) -> None:
    """Option values a user can get wrong, reported before any model is loaded."""
    methods = opts.method or DEFAULT_METHODS
    if opts.steps < 2:
        raise DeepprobeError(f"--steps must be at least 2, got {opts.steps}")
    if opts.internal_batch < 1 or opts.samples < 1:
        raise DeepprobeError("--internal-batch and --samples must be at least 1")
    if opts.noise <= 0:
        raise DeepprobeError(f"--noise must be positive, got {opts.noise:g}")
    if opts.window < 0 or opts.stride < 0:
        raise DeepprobeError("--window and --stride must be 0 (automatic) or positive")
    if opts.head_fusion not in ("mean", "max", "min"):
        raise DeepprobeError(f"--head-fusion must be mean, max or min, got {opts.head_fusion!r}")
    if not 0.0 <= opts.discard_ratio < 1.0:
        raise DeepprobeError(f"--discard-ratio must be in [0, 1), got {opts.discard_ratio:g}")
    if not 0.0 <= opts.alpha <= 1.0:
        raise DeepprobeError(f"--alpha must be in [0, 1], got {opts.alpha:g}")
    if opts.layer and not any(m in LAYER_METHODS for m in methods):
        raise DeepprobeError(f"--layer applies to {', '.join(LAYER_METHODS)} only")
    if (opts.layer and any(m in BLOCK_METHODS for m in methods)
            and any(m in CAM_METHODS + ("similarity",) for m in methods)):
        raise DeepprobeError(f"--layer is a module name for CAMs but a block index for {', '.join(BLOCK_METHODS)}: "
                             "run them as separate commands")
    if opts.composite not in COMPOSITES:
        raise DeepprobeError(f"--composite must be one of {', '.join(COMPOSITES)}, got {opts.composite!r}")


class _Explainer:
    """Runs every method on a batch, writes overlays, maps, panels and head figures, and fills the table."""

    def __init__(self, run, bundle, opts: Options, targets: list[int | None]):
        from rich.table import Table

        self.run, self.bundle, self.opts, self.targets = run, bundle, opts, targets
        self.cam_layer: str | None = opts.layer if any(m in CAM_METHODS for m in opts.method) else None
        self.table = Table(title=f"explain · {bundle.title} · {', '.join(opts.method)} on {bundle.device}")
        # CLIP with chefer or attnlrp: the words of each prompt are scored too, by the same rules on the text tower
        self.words = [m for m in opts.method if m in WORD_METHODS] if bundle.task == "image-text" else []
        columns = ("image", "class", "probability", "predicted", "output") + tuple(f"words ({m})" for m in self.words)
        for column in columns:
            self.table.add_column(column)

    def _method_kwargs(self, method: str) -> dict:
        return method_kwargs(self.opts, method, self.cam_layer)

    def batch(self, paths: list[Path], x, progress, task) -> None:
        import torch

        from ..explain import explain
        from ..explain.cam import default_cam_layer

        x = x.to(self.bundle.device)
        if self.cam_layer is None and any(m in CAM_METHODS for m in self.opts.method):
            self.cam_layer = default_cam_layer(self.bundle, x)
        probs = self.bundle.predict(x) if self.bundle.num_classes else None
        predicted = probs.argmax(1) if probs is not None else None
        maps: dict[tuple[str, int | None], torch.Tensor] = {}  # (method, target) -> (N,H,W) on the CPU
        for method in self.opts.method:
            names = ", ".join(p.name for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
            progress.update(task, info=f"{method} · {names}")
            for target in ([None] if method in CLASS_FREE else self.targets):
                t = None if method in CLASS_FREE else (predicted if target is None else
                                                       torch.full_like(predicted, target))
                maps[(method, target)] = explain(self.bundle, x, method, target=t, **self._method_kwargs(method)).cpu()
            progress.advance(task, len(paths))
        heads = None
        if "attention" in self.opts.method:
            from ..explain.transformer import attention_heads

            heads = attention_heads(self.bundle, x, layer=self.opts.layer).cpu()
        words = {}  # (method, target) -> per image TextRelevance
        for method in self.words:
            module, _, name = WORD_METHODS[method].partition(":")
            score_words = getattr(importlib.import_module(f"deepprobe.explain.{module}"), name)
            for target in self.targets:
                words[(method, target)] = score_words(self.bundle, x, predicted if target is None else
                                                      torch.full_like(predicted, target))
        photos = x.detach().cpu()
        for i, path in enumerate(paths):
            for target in self.targets:
                cls = int(predicted[i]) if target is None else target
                per_method = {m: maps[(m, None if m in CLASS_FREE else target)][i] for m in self.opts.method}
                self._write(path, photos[i], per_method, cls, probs[i] if probs is not None else None,
                            int(predicted[i]) if predicted is not None else None, target is None,
                            {m: words[(m, target)][i] for m in self.words})
            if heads is not None:
                self._write_heads(path, photos[i], heads[i])

    def _caption(self, method: str, cls: int, prob) -> str:
        from ..figures.explain import map_caption

        return map_caption(method, self.cam_layer if method in CAM_METHODS else None, self.bundle.class_name(cls),
                           float(prob[cls]) if prob is not None else None, method in CLASS_FREE)

    def _write(self, path: Path, photo, per_method: dict, cls: int, prob, pred: int | None, is_pred: bool,
               words: dict | None = None) -> None:
        import numpy as np

        from ..io import name_slug, safe_stem
        from ..render import captioned, overlay, panel
        from .explain_outputs import save_map

        class_name = self.bundle.class_name(cls)
        stem = safe_stem(path)
        record = {"input": str(path), "class": class_name, "class_index": cls,
                  "probability": round(float(prob[cls]), 6) if prob is not None else None,
                  "predicted": self.bundle.class_name(pred) if pred is not None else None,
                  "target_is_predicted": is_pred, "methods": {}}
        words = words or {}
        if "chefer" in words:
            record["text_relevance"] = words["chefer"].as_dict()
        tiles, captions = [photo], [f"input · predicted {record['predicted']}"
                                    + (f" {float(prob[pred]):.1%}" if prob is not None else "")]
        for method, heat in per_method.items():
            heat_np = heat.numpy().astype(np.float32)
            name = f"{stem}_{name_slug(method.replace('+', 'p'))}_{name_slug(class_name)}"
            caption = self._caption(method, cls, prob)
            if method in words:  # captions hold two lines: the words take the second
                caption = caption.replace("\n", " · ", 1) + f"\nwords: {words[method].line()}"
            pic = overlay(photo, heat_np, alpha=self.opts.alpha)
            entry = {"method": method, "layer": self.cam_layer if method in CAM_METHODS else
                     (self.opts.layer if method in BLOCK_METHODS else None),
                     "options": {k: getattr(self.opts, k) for k in METHOD_OPTIONS.get(method, ())}}
            if method in words:
                entry["text_relevance"] = words[method].as_dict()
            record["methods"][method] = save_map(self.run, captioned(pic, caption), name, heat_np, record, entry)
            tiles.append(pic)
            captions.append(caption)
        shown = next(iter(record["methods"].values()))["overlay"]
        if len(per_method) > 1:
            title = f"{path.name} · {self.bundle.title} · explaining {class_name}"
            out = self.run.save_image(panel(tiles, captions, cell=224, title=title),
                                      f"{stem}_{name_slug(class_name)}_panel.png",
                                      result={**record, "panel": True})
            record["panel"] = shown = str(out)
        self.run.add_result(record)
        self.table.add_row(path.name, class_name, f"{record['probability']:.1%}" if prob is not None else "-",
                           record["predicted"] or "-", Path(shown).name, *(words[m].line() for m in self.words))

    def _write_heads(self, path: Path, photo, heads) -> None:
        from .explain_outputs import write_heads

        write_heads(self.run, path, photo, heads, self.opts)

    def show(self) -> None:
        if self.run.show_progress and self.table.row_count:
            out_console.print(self.table)
            if self.cam_layer:
                out_console.print(f"CAM layer: {self.cam_layer}")

