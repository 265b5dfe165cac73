"""Figures of the jobs that synthesize images: invert's grid, maximize's grid, dream's and style's panels."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from PIL import Image

from ..render import grid, panel


def invert_grid(original, images: Mapping, errors: Mapping[str, float], layers: Sequence[str], title: str):
    """original | each layer's reconstruction (shallow to deep), captioned with the feature error reached."""
    h, w = original.shape[-2:]
    tiles = [original] + [images[name] for name in layers]
    captions = [f"original {w}x{h}"] + [f"{name}\nerror {errors[name]:.3f}" for name in layers]
    return grid(tiles, captions, columns=len(tiles), cell=min(max(int(w), 128), 224), title=title)


def maximize_caption(rec: dict) -> str:
    text = f"{rec['unit']}: {rec['activation']:.1f}"
    if "natural_best" in rec:
        text += f" (photos best {rec['natural_best']:.1f})"
    return text


def maximize_grid(images, records: Sequence[dict], size: int, title: str, columns: int | None = None):
    """One captioned tile per unit; small results are shown enlarged, so captions stay readable."""
    cell = min(max(size, 128), 224)
    return grid(list(images), [maximize_caption(r) for r in records], columns=columns or min(len(records), 8),
                cell=cell, title=title)


def dream_panel(photo, dreamed, record: dict, title: str) -> Image.Image:
    """input | dream, the dream captioned with what grew and how much of the layout survived."""
    h, w = photo.shape[-2:]
    target = record.get("target")
    if target is not None:
        caption = (f"dream guided to {target}\nlogit {record['target_logit_before']:.1f} -> "
                   f"{record['target_logit_after']:.1f} · layout r={record['layout_correlation']:.2f}")
    else:
        growth = " · ".join(f"{k} norm x{v:.2f}" for k, v in record["norm_growth"].items())
        caption = f"dream ({'+'.join(record['layers'])})\n{growth} · layout r={record['layout_correlation']:.2f}"
    return panel([photo, dreamed], [f"input {w}x{h}", caption], cell=min(int(w), 512), title=title)


def style_panel(content, styles: Sequence, result, content_name: str, style_names: Sequence[str],
                blend: Sequence[float], record: dict, title: str) -> Image.Image:
    """content | style(s) | result; with a judge's numbers (`measure`) in the result's caption when present."""
    captions = [f"content: {content_name}"]
    captions += [f"style: {name}" + (f" ({b:.0%})" if len(style_names) > 1 else "")
                 for name, b in zip(style_names, blend)]
    if "style_ratio" in record:
        judge = str(record["measured_by"]).replace("efficientnet_", "")
        captions.append(f"result: Gram dist x{record['style_ratio']:.2f} of content's\n"
                        f"content dist x{record['content_ratio']:.2f} of style's · {judge}")
    else:
        captions.append("result")
    w = result.shape[-1]
    return panel([content, *styles, result], captions, cell=min(256, max(int(w), 160)), title=title)
