"""DINO's figure, shared by `explain` on classifier ViTs and on embedders: one tile per attention head."""
from __future__ import annotations

from pathlib import Path

from ..options.explain import Options


def write_heads(run, path: Path, photo, heads, opts: Options) -> None:
    """NAME_attention_heads.png: the photo and the CLS token's attention of every head, one tile each (DINO's
    figure), for the block --layer names (default the last)."""
    from ..io import safe_stem
    from ..render import grid, overlay

    tiles = [overlay(photo, h.numpy(), alpha=opts.alpha) for h in heads]
    block = opts.layer if opts.layer not in (None, "") else "last"
    figure = grid([photo] + tiles, ["input"] + [f"head {k}" for k in range(len(tiles))],
                  columns=min(len(tiles) + 1, 7), cell=160,
                  title=f"{path.name} · CLS attention per head · block {block}")
    out = run.save_image(figure, f"{safe_stem(path)}_attention_heads.png",
                         result={"input": str(path), "heads": len(tiles), "block": block})
    run.add_result({"input": str(path), "attention_heads": str(out), "heads": len(tiles)})
