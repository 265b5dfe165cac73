"""`deepprobe classify` on embedders: DINO's k-NN classification over a --gallery of class folders, or the
nearest gallery images of an unlabelled one, with a figure of each image's nearest neighbours."""
from __future__ import annotations

from pathlib import Path

from ..errors import DeepprobeError
from ..options.classify import Options
from .common import out_console


def classify_embedder_images(run, bundle, images: list[str], gallery_dir: str | None, opts: Options) -> None:
    import torch
    from rich.table import Table

    from ..models.embedding import embed
    from ..techniques.knn import knn_predict, nearest
    from .gallery import read_gallery
    from .inputs import batches, image_paths

    if not gallery_dir:
        raise DeepprobeError(f"{bundle.spec} is an embedder: it has no classes of its own; give --gallery DIR "
                             "(a sub-folder of images per class: DINO's k-NN classification)")
    paths = image_paths(run, images)
    gallery = read_gallery(run, bundle, gallery_dir, opts.batch_size)
    labelled = gallery.labels is not None
    title = (f"{bundle.title} · {opts.neighbors}-NN over {len(gallery)} images in {len(gallery.classes)} classes "
             f"(T={opts.temperature:g})" if labelled else f"{bundle.spec} · nearest of {len(gallery)} images")
    table = Table(title=title)
    for column in ("image",) + (("k-NN class", "vote") if labelled else ()) + ("nearest", "cosine"):
        table.add_column(column)
    run.summary.update(gallery=gallery_dir, gallery_size=len(gallery), classes=gallery.classes or None,
                       neighbors=opts.neighbors if labelled else None,
                       temperature=opts.temperature if labelled else None)
    for chunk_paths, x in batches(run, bundle, paths, opts.batch_size):
        with torch.no_grad():
            queries = embed(bundle, x)
        shown = nearest(gallery, queries, opts.top)
        votes = knn_predict(gallery, queries, opts.neighbors, opts.temperature, opts.top) if labelled else None
        for i, path in enumerate(chunk_paths):
            record = {"input": str(path), "nearest": shown[i].as_dict()}
            if votes is not None:
                record.update(votes[i].as_dict(), neighbors=opts.neighbors, temperature=opts.temperature)
            record["output"] = str(_figure(run, bundle, path, x[i].cpu(), shown[i], record.get("top")))
            run.add_result(record)
            cells = [path.name]
            if votes is not None:
                top = record["top"]
                cells += [top[0]["class"], f"{top[0]['vote']:.1%}"]
            cells += [Path(shown[i].names[0]).name, f"{shown[i].similarities[0]:.3f}"]
            table.add_row(*cells)
    if run.show_progress:
        out_console.print(table)


def _figure(run, bundle, path: Path, photo, found, top: list[dict] | None) -> Path:
    """NAME_neighbours.png: the image and its nearest gallery images, each captioned with its cosine."""
    from ..io import safe_stem
    from ..render import grid

    tiles, captions = [photo], [path.name + (f"\nk-NN: {top[0]['class']} {top[0]['vote']:.0%}" if top else "")]
    for name, sim, label in zip(found.names, found.similarities, found.labels or [None] * len(found.names)):
        tiles.append(bundle.load_image(name)[0].cpu())
        captions.append(f"{Path(name).name}\n" + (f"{label} · " if label else "") + f"cosine {sim:.3f}")
    title = f"{path.name} · nearest gallery images · {bundle.title}"
    return run.save_image(grid(tiles, captions, columns=len(tiles), cell=160, title=title),
                          f"{safe_stem(path)}_neighbours.png",
                          result={"input": str(path), "nearest": found.as_dict(), "top": top})
