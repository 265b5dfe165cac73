"""What `explain` writes for every kind of model: a map's figure with its .npy, and DINO's per-head figure."""
from __future__ import annotations

from pathlib import Path

from ..options.explain import Options


def write_heads(run, path: Path, photo, heads, opts: Options) -> None:
    """NAME_attention_heads.png: the photo and the CLS token's attention of every head, one tile each (DINO's
    figure), for the block --layer names (default the last)."""
    from ..figures.explain import heads_grid
    from ..io import safe_stem

    block = opts.layer if opts.layer not in (None, "") else "last"
    figure = heads_grid(photo, heads, block, path.name, opts.alpha)
    out = run.save_image(figure, f"{safe_stem(path)}_attention_heads.png",
                         result={"input": str(path), "heads": len(heads), "block": block})
    run.add_result({"input": str(path), "attention_heads": str(out), "heads": len(heads)})


def save_map(run, figure, name: str, heat, record: dict, entry: dict) -> dict:
    """NAME.png (the figure, with a sidecar of the record and this method's entry) and NAME.npy (the map, HxW in
    [0,1]); returns the entry with both paths, for record["methods"]."""
    import numpy as np

    out = run.save_image(figure, f"{name}.png", result={**record, **entry, "methods": None})
    npy = run.save_file(lambda p: np.save(p, heat), f"{name}.npy", sidecar=False)
    return {**entry, "overlay": str(out), "map": str(npy)}
