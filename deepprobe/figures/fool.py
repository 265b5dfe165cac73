"""`fool`'s panel: original | amplified perturbation | adversarial, captioned with classes and probabilities."""
from __future__ import annotations

from PIL import Image

from ..render import amplification, panel


def verdict(r: dict) -> str:
    """fooled / NOT fooled, and for a targeted attack the target probability against the one asked for."""
    if not r["success"]:
        return "NOT fooled" + (f" (target {r['target_probability']:.1%})" if r["target"] else "")
    if not r["target"] or not r["confidence"]:
        return "fooled"
    sign = ">=" if r["confidence_reached"] else "<"
    return f"fooled, target {r['target_probability']:.1%} {sign} {r['confidence']:.0%} asked"


def perturbation_tile(original, adversarial, linf: float, amplify: float | None = None):
    """The change made visible: 0.5 + scale x (adversarial - original), and the scale used."""
    scale = amplification(linf, amplify)
    return (0.5 + scale * (adversarial.cpu() - original.cpu())).clamp(0, 1), scale


def fool_panel(original, adversarial, record: dict, name: str, amplify: float | None = None) -> Image.Image:
    """One image's panel from its record (`AttackResult.records`, measured on the saved PNG by the CLI)."""
    middle, scale = perturbation_tile(original, adversarial, float(record["linf"]), amplify)
    captions = [f"original: {record['original_class']} {record['original_probability']:.1%}",
                f"perturbation x{scale:g}\nL-inf {record['linf_255']:g}/255 · L2 {record['l2']:.3f}",
                f"adversarial: {record['final_class']} {record['final_probability']:.1%}"
                + ("" if record["success"] else " (not fooled)")]
    goal = f"target {record['target']}" if record["target"] is not None else "untargeted"
    title = f"{name} · {record['method']} · {goal} · {verdict(record)}"
    tiles = [original.cpu(), middle, adversarial.cpu()]
    return panel(tiles, captions, cell=max(int(t.shape[-1]) for t in tiles), title=title)


def noise_grid(images, records: list[dict], method: str, refined: bool) -> Image.Image:
    """`fool --from-noise`'s grid: one image per target, captioned with the target's probability."""
    from ..render import grid

    captions = [f"{r['target']}\n{r['confidence']:.2%}" + ("" if r["success"] else " (short)") for r in records]
    title = f"from noise · {method}" + (" + gradient finish" if refined else "")
    cell = max(120, min(224, int(images.shape[-1])))
    return grid(list(images), captions, cell=cell, title=title if len(records) > 1 else None,
                columns=min(len(records), 5))


def feature_panel(original, adversarial, record: dict, name: str, reference: str | None,
                  amplify: float | None = None) -> Image.Image:
    """`fool` on an embedder: original | perturbation | adversarial with the cosines (and the nearest gallery
    image where the record has one); `reference` names the image pulled toward (None: pushed away)."""
    middle, scale = perturbation_tile(original, adversarial, float(record["linf"]), amplify)
    tiles = [original.cpu(), middle, adversarial.cpu()]
    captions = [f"original{_feature_where(record, 'before')}",
                f"perturbation x{scale:g}\nL-inf {record['linf_255']:g}/255",
                f"saved PNG{_feature_where(record, 'after')}"]
    goal = "away from itself" if reference is None else f"toward {reference}"
    title = f"{name} · feature PGD · {goal} · {feature_verdict(record)}"
    return panel(tiles, captions, cell=max(int(tiles[0].shape[-1]), 160), title=title)


def _feature_where(record: dict, when: str) -> str:
    """' · cos to ref 0.12\nnearest cat.jpg' for a panel caption (two lines at most)."""
    from pathlib import Path

    if record["goal"] != "away":
        text = f" · cos to ref {record['cosine_before' if when == 'before' else 'cosine_after']:.2f}"
    else:
        text = f" · cos to original {record['cosine_to_original']:.2f}" if when == "after" else ""
    if f"nearest_{when}" in record:
        text += f"\nnearest {Path(record[f'nearest_{when}']).name}"
    return text


def feature_verdict(record: dict) -> str:
    if record["success"] is None:
        return f"cosine to the original {record['cosine_to_original']:.3f} (give --gallery for a verdict)"
    return "fooled" if record["success"] else "NOT fooled"
