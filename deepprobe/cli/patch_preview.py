"""The preview grid written beside every trained patch (classifier and detector patches alike)."""
from __future__ import annotations

from pathlib import Path


def save_preview(run, figure, name: str, patch_path: Path, meta: dict) -> Path:
    """The preview grid beside a trained patch, and the run's result row (its metadata, loss curve left out)."""
    preview_path = run.save_image(figure, name,
                                  result={"patch": str(patch_path), "preview": True})
    summary = {k: v for k, v in meta.items() if k != "loss_curve"}
    run.add_result({**summary, "output": str(patch_path), "preview": str(preview_path)})
    return preview_path
