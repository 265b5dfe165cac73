"""What embedder commands read besides their images: `--gallery DIR` (classify, fool), a folder of images
embedded once per run, and `--reference IMG` (explain, fool).

Sub-folders are classes (DINO's k-NN votes over them, like an ImageFolder); images directly in DIR, with no
sub-folders, make an unlabelled gallery (nearest images only). Unreadable files are skipped with a warning.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DeepprobeError, ImageError
from .common import err_console

EMBEDDERS = "Embedders (DINO, CLIP/SigLIP towers)"  # the --help panel of their options


def load_reference(bundle, reference: str):
    """The --reference image at the model's input size, or one clear line."""
    try:
        return bundle.load_image(reference)
    except ImageError as exc:
        raise DeepprobeError(f"--reference: {exc}") from exc


def gallery_files(folder: str) -> list[tuple[Path, str | None]]:
    """(image path, class or None) for every image of the gallery folder."""
    from ..io import find_images

    root = Path(folder)
    if not root.is_dir():
        raise DeepprobeError(f"--gallery {folder}: not a folder")
    entries = [(path, sub.name) for sub in sorted(d for d in root.iterdir() if d.is_dir())
               for path in find_images([str(sub)])[0]]
    if not entries:
        entries = [(path, None) for path in find_images([str(root)])[0]]
    if not entries:
        raise DeepprobeError(f"--gallery {folder} holds no images (sub-folders per class, or images)")
    return entries


def read_gallery(run, bundle, folder: str, batch_size: int = 32):
    """The embedded gallery (deepprobe.techniques.knn.Gallery), in batches so large folders fit in memory."""
    import torch

    from ..models.embedding import embed
    from ..techniques.knn import Gallery

    entries = gallery_files(folder)
    parts, names, labels, chunk = [], [], [], []

    def flush() -> None:
        if chunk:
            with torch.no_grad():
                parts.append(embed(bundle, torch.cat(chunk)).cpu())
            chunk.clear()

    with run.status(f"embedding the gallery ({len(entries)} images)"):
        for path, label in entries:
            try:
                chunk.append(bundle.load_image(path))
            except ImageError as exc:
                err_console.print(f"[yellow]skipping gallery image {path}: {exc}[/yellow]")
                continue
            names.append(str(path))
            labels.append(label)
            if len(chunk) == batch_size:
                flush()
        flush()
    if not names:
        raise DeepprobeError(f"--gallery {folder}: no readable images")
    labelled = all(label is not None for label in labels)
    return Gallery(torch.cat(parts), names, labels if labelled else None)
