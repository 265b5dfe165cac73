"""What embedder commands read besides their images: `--gallery DIR` (classify, fool), a folder of images
embedded once per model and kept between runs (deepprobe.gallery_cache), and `--reference IMG` (explain, fool).

Sub-folders are classes (DINO's k-NN votes over them, like an ImageFolder); images directly in DIR, with no
sub-folders, make an unlabelled gallery (nearest images only). Unreadable files are skipped with a warning.
"""
from __future__ import annotations

from pathlib import Path

from rich.markup import escape

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
    """The embedded gallery (deepprobe.techniques.knn.Gallery), in batches so large folders fit in memory.
    Embeddings are kept between runs (deepprobe.gallery_cache): only new or changed images are embedded again."""
    import torch

    from ..gallery_cache import GalleryCache
    from ..models.embedding import embed
    from ..techniques.knn import Gallery

    entries = gallery_files(folder)
    cache = GalleryCache.open(bundle, folder)
    rows: list = [None] * len(entries)  # each readable image's embedding, in gallery order
    readable: list[int] = []
    chunk: list[tuple[int, Path, torch.Tensor]] = []

    def flush() -> None:
        if chunk:
            with torch.no_grad():
                embedded = embed(bundle, torch.cat([image for _, _, image in chunk])).cpu()
            for (k, path, _), e in zip(chunk, embedded):
                rows[k] = e
                cache.keep(path, e)
            chunk.clear()

    with run.status(f"embedding the gallery ({len(entries)} images)"):
        for k, (path, _) in enumerate(entries):
            kept = cache.lookup(path)
            if kept is not None:
                rows[k] = kept
                readable.append(k)
                continue
            try:
                chunk.append((k, path, bundle.load_image(path)))
            except ImageError as exc:
                err_console.print(f"[yellow]skipping gallery image {escape(str(path))}: {escape(str(exc))}[/yellow]")
                continue
            readable.append(k)
            if len(chunk) == batch_size:
                flush()
        flush()
    cache.save()
    if cache.note:
        err_console.print(f"[yellow]{escape(cache.note)}[/yellow]")
    if not readable:
        raise DeepprobeError(f"--gallery {folder}: no readable images")
    run.summary.update(gallery_cached=cache.hits)
    names = [str(entries[k][0]) for k in readable]
    labels = [entries[k][1] for k in readable]
    labelled = all(label is not None for label in labels)
    return Gallery(torch.stack([rows[k] for k in readable]), names, labels if labelled else None)
