"""`deepprobe models` and `deepprobe layers`: what can be loaded, and which layers it has."""
from __future__ import annotations

import typer

from . import app
from .common import command, out_console


@command(app, "models", uses_model=False)
def models_cmd(run):
    """List the bundled models, the accepted model spec forms, and the pretrained names whose weights are in the
    local caches (those load with no network; others are downloaded once when online)."""
    from rich.table import Table

    from ..models.pretrained import cached_models, hf_cache_dir, torch_cache_dir
    from ..models.sources import BUNDLED, SPEC_FORMS
    from ..models.torchvision_tasks import task_specs

    rows = [{"spec": s, "task": _FORM_TASKS.get(s, "classification"), "meaning": m} for s, m in SPEC_FORMS]
    rows += [{"spec": s, "task": t, "meaning": _TASK_MEANING[t]} for s, t in task_specs()]
    cached = cached_models()
    caches = {"Hugging Face hub": str(hf_cache_dir()), "torch hub": str(torch_cache_dir())}
    run.summary.update(bundled=list(BUNDLED), spec_forms=rows, cached=cached, caches=caches)
    if run.show_progress:
        table = Table(title="model specs (--model)")
        table.add_column("spec", no_wrap=True)
        table.add_column("task")
        table.add_column("meaning")
        for row in rows:
            table.add_row(row["spec"], row["task"], row["meaning"])
        out_console.print(table)
        found = Table(title="pretrained weights in the local caches (load with no network)")
        found.add_column("spec", no_wrap=True)
        found.add_column("cache")
        for row in cached:
            found.add_row(row["spec"], row["cache"])
        if cached:
            out_console.print(found)
        folders = "; ".join(f"{name}: {path}" for name, path in caches.items())
        out_console.print(("" if cached else "No pretrained weights in the local caches. ") + f"Caches: {folders}",
                          markup=False, soft_wrap=True)


# spec forms whose task is not simply "classification"
_FORM_TASKS = {"python:module:callable": "by its output", "hf:DIR (CLIPModel)": "image-text", "--random-init": "",
               "hf:DIR (DetrForObjectDetection)": "detection", "timm:NAME --weights FILE (no head)": "embedding",
               "hf:DIR (Dinov2Model, ViTModel, CLIPVisionModel, SiglipVisionModel)": "embedding",
               "hf:DIR (SamModel)": "promptable-segmentation", "hf:DIR (DepthAnythingForDepthEstimation)": "depth"}
_TASK_MEANING = {"detection": "pretrained COCO weights (torch hub cache) or --weights FILE",
                 "segmentation": "pretrained VOC weights (torch hub cache) or --weights FILE"}


@command(app, "layers")
def layers_cmd(run, depth: int = typer.Option(None, "--depth", help="Only names with at most this many dots + 1."),
               contains: str = typer.Option(None, "--grep", help="Only names containing this text.")):
    """List dotted layer names with their output shapes (use them with --layer)."""
    import torch
    from rich.table import Table

    from ..models.layers import layer_shapes

    bundle = run.bundle()
    size = bundle.input_size or (224, 224)
    rows = layer_shapes(bundle.net, torch.zeros(1, 3, *size, device=bundle.device), bundle.inner, max_depth=depth)
    rows = [r for r in rows if not contains or contains in r[0]]
    run.summary["layers"] = [{"name": n, "type": t, "shape": list(s)} for n, t, s in rows]
    if run.show_progress:
        table = Table(title=f"layers of {bundle.title} (input 1x3x{size[0]}x{size[1]})")
        for col in ("name", "type", "output shape"):
            table.add_column(col)
        for name, kind, shape in rows:
            table.add_row(name, kind, "x".join(map(str, shape)))
        out_console.print(table)
