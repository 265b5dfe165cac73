"""`deepprobe explain` on embedders: DINO's per-head attention, rollout, and similarity maps to a --reference image.
Called by cli/explain.py once the model's task is known."""
from __future__ import annotations

from pathlib import Path

from ..errors import DeepprobeError
from ..options.explain import CAM_METHODS, CLASS_FREE, Options, method_kwargs
from .common import out_console


def embedder_methods(bundle, opts: Options, reference: str | None) -> list[str]:
    """The methods to run (default: similarity with a reference; else attention on a ViT), checked."""
    from ..explain.embedding import SCORE_METHODS, is_vision_transformer

    if opts.target:
        raise DeepprobeError(f"{bundle.spec} is an embedder: it has no classes, so --target does not apply "
                             "(give --reference IMG to explain a similarity)")
    methods = list(opts.method)
    if not methods:
        if reference:
            methods = ["similarity"]
        elif is_vision_transformer(bundle):
            methods = ["attention"]
        else:
            raise DeepprobeError(f"{bundle.spec} is an embedder without attention layers: give --reference IMG to "
                                 "map where images resemble it (explain --method similarity)")
    for method in methods:
        if method not in CLASS_FREE and method not in SCORE_METHODS:
            raise DeepprobeError(f"{method} does not apply to an embedder; use attention, rollout or, with "
                                 f"--reference, {', '.join(SCORE_METHODS)}")
        if method not in CLASS_FREE and not reference:
            raise DeepprobeError(f"{method} on an embedder explains the similarity of two images: give "
                                 "--reference IMG (attention and rollout need none)")
    return methods


def explain_embedder_images(run, bundle, images: list[str], opts: Options, reference: str | None) -> None:
    from rich.table import Table

    from .gallery import load_reference
    from .inputs import batches, image_paths

    opts.method = embedder_methods(bundle, opts, reference)
    ref = load_reference(bundle, reference) if reference else None
    if opts.layer and any(m in CAM_METHODS for m in opts.method):
        bundle.layer(opts.layer)  # unknown layers fail here, once, with suggestions
    paths = image_paths(run, images)
    table = Table(title=f"explain · {bundle.title} (embedder) · {', '.join(opts.method)} on {bundle.device}")
    for column in ("image",) + (("reference", "cosine") if ref is not None else ()) + ("output",):
        table.add_column(column)
    writer = _Writer(run, bundle, opts, table, Path(reference) if reference else None, ref)
    with run.progress() as progress:
        task = progress.add_task("explain", total=len(paths) * len(opts.method), info="")
        for chunk_paths, x in batches(run, bundle, paths, opts.batch_size):
            writer.batch(chunk_paths, x, progress, task)
    run.summary.update(methods=list(opts.method), reference=reference, cam_layer=writer.cam_layer,
                       resolved={m: writer.resolved(m) for m in opts.method})
    if run.show_progress and table.row_count:
        out_console.print(table)


class _Writer:
    """Computes each method's maps for a batch and writes overlays, pair figures, .npy maps and head panels."""

    def __init__(self, run, bundle, opts: Options, table, reference_path: Path | None, reference):
        self.run, self.bundle, self.opts, self.table = run, bundle, opts, table
        self.reference_path, self.reference = reference_path, reference
        self.cam_layer: str | None = opts.layer if self._cams() else None

    def _cams(self) -> bool:
        """Whether a method reads a layer's activations (similarity on a CNN is Grad-CAM)."""
        return any(self.resolved(m) in CAM_METHODS for m in self.opts.method)

    def resolved(self, method: str) -> str:
        from ..explain.embedding import resolve_method

        return resolve_method(self.bundle, method, self.opts.layer)

    def batch(self, paths: list[Path], x, progress, task) -> None:
        import torch

        from ..explain import explain
        from ..explain.cam import default_cam_layer
        from ..models.embedding import embed

        x = x.to(self.bundle.device)
        if self.cam_layer is None and self._cams():
            self.cam_layer = default_cam_layer(self.bundle, x)
        ref = self.reference
        maps, ref_maps = {}, {}
        for method in self.opts.method:
            progress.update(task, info=f"{method} · {paths[0].name}")
            kwargs = method_kwargs(self.opts, method, self.cam_layer)
            if method in CLASS_FREE:
                maps[method] = explain(self.bundle, x, method, **kwargs).cpu()
            else:  # both sides of the pair: each image against the reference, the reference against each image
                maps[method] = explain(self.bundle, x, method, reference=ref, **kwargs).cpu()
                copies = ref.expand(x.shape[0], -1, -1, -1)
                ref_maps[method] = explain(self.bundle, copies, method, reference=x, **kwargs).cpu()
            progress.advance(task, len(paths))
        cosines = None
        if ref is not None:
            with torch.no_grad():
                cosines = (embed(self.bundle, x) @ embed(self.bundle, ref).T)[:, 0].cpu()
        heads = None
        if "attention" in self.opts.method:
            from ..explain.transformer import attention_heads

            heads = attention_heads(self.bundle, x, layer=self.opts.layer).cpu()
        for i, path in enumerate(paths):
            self._write(path, x[i].detach().cpu(), {m: v[i] for m, v in maps.items()},
                        {m: v[i] for m, v in ref_maps.items()}, None if cosines is None else float(cosines[i]))
            if heads is not None:
                from .explain_outputs import write_heads

                write_heads(self.run, path, x[i].detach().cpu(), heads[i], self.opts)

    def _label(self, method: str) -> str:
        resolved = self.resolved(method)
        label = method + (f" ({resolved})" if resolved != method else "")
        if resolved in CAM_METHODS:
            label += f" @ {self.opts.layer or self.cam_layer}"
        if method == "attention":
            label += f" · block {self.opts.layer or 'last'}" + (f" · head {self.opts.head}" if self.opts.head
                                                                 is not None else " · mean of heads")
        return label

    def _write(self, path: Path, photo, maps: dict, ref_maps: dict, cosine: float | None) -> None:
        import numpy as np

        from ..io import name_slug, safe_stem
        from ..render import captioned, overlay, panel
        from .explain_outputs import save_map

        stem = safe_stem(path)
        ref_name = self.reference_path.name if self.reference_path is not None else None
        record = {"input": str(path), "reference": str(self.reference_path) if ref_name else None,
                  "cosine": round(cosine, 6) if cosine is not None else None, "methods": {}}
        tiles, captions = [photo], ["input" + (f" · cosine {cosine:.3f} to {ref_name}" if ref_name else "")]
        for method, heat in maps.items():
            heat_np = heat.numpy().astype(np.float32)
            pic = overlay(photo, heat_np, alpha=self.opts.alpha)
            label = self._label(method)
            entry = {"method": method, "resolved": self.resolved(method), "layer": self.opts.layer or
                     (self.cam_layer if self.resolved(method) in CAM_METHODS else None)}
            if method in ref_maps:  # the pair: where each image resembles the other
                ref_pic = overlay(self.reference[0].detach().cpu(), ref_maps[method].numpy(), alpha=self.opts.alpha)
                name = f"{stem}_{name_slug(method.replace('+', 'p'))}_vs_{safe_stem(self.reference_path)}"
                caption = f"{label}\ncosine {cosine:.3f}"
                figure = panel([pic, ref_pic], [f"{path.name} · {label}", f"reference {ref_name}"],
                               cell=max(int(photo.shape[-1]), 224),
                               title=f"where {path.name} and {ref_name} are alike · cosine {cosine:.3f}")
            else:
                name = f"{stem}_{name_slug(method)}"
                caption = label
                figure = captioned(pic, caption)
            record["methods"][method] = save_map(self.run, figure, name, heat_np, record, entry)
            tiles.append(pic)
            captions.append(caption)
        shown = next(iter(record["methods"].values()))["overlay"]
        if len(maps) > 1:
            title = f"{path.name} · {self.bundle.title}" + (f" · similarity to {ref_name}" if ref_name else "")
            out = self.run.save_image(panel(tiles, captions, cell=224, title=title), f"{stem}_panel.png",
                                      result={**record, "panel": True})
            record["panel"] = shown = str(out)
        self.run.add_result(record)
        self.table.add_row(path.name, *((ref_name, f"{cosine:.3f}") if ref_name else ()), Path(shown).name)
