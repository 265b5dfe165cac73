"""Plots of an evaluation as PIL images: deletion/insertion curves and the randomization sanity curve.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global figure state, no display needed).
Inputs are plain lists of numbers, so the plots can be redrawn from a JSON sidecar.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from PIL import Image

BASELINE_STYLE = {"random": dict(color="0.55", linestyle="--"), "edge": dict(color="0.2", linestyle=":")}
COLORS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _to_image(fig) -> Image.Image:
    fig.canvas.draw()
    import numpy as np

    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")


def _style(name: str, index: int) -> dict:
    return BASELINE_STYLE.get(name, dict(color=COLORS[index % len(COLORS)], linestyle="-", linewidth=2))


def curves_plot(fractions: Sequence[float], deletion: Mapping[str, Sequence[float]],
                insertion: Mapping[str, Sequence[float]], deletion_auc: Mapping[str, float],
                insertion_auc: Mapping[str, float], title: str = "") -> Image.Image:
    """Two panels: mean target probability vs fraction of pixels deleted / inserted, one line per map."""
    fig = _figure(9.0, 3.8)
    axes = fig.subplots(1, 2)
    for ax, curves, areas, what, better in ((axes[0], deletion, deletion_auc, "deleted", "lower"),
                                            (axes[1], insertion, insertion_auc, "inserted", "higher")):
        for i, (name, ys) in enumerate(curves.items()):
            ax.plot(list(fractions), list(ys), label=f"{name} (AUC {areas[name]:.3f})", **_style(name, i))
        ax.set_xlabel(f"fraction of pixels {what}")
        ax.set_ylabel("target probability (mean)")
        ax.set_title(f"{'deletion' if what == 'deleted' else 'insertion'}: {better} AUC is better", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right" if what == "deleted" else "lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _to_image(fig)


def sanity_plot(layers: Sequence[str], correlations: Mapping[str, Sequence[float]],
                per_image: Mapping[str, Sequence[Sequence[float]]] | None = None, title: str = "") -> Image.Image:
    """Spearman correlation with the original maps as more layers are randomized (left to right, logits first)."""
    fig = _figure(max(6.0, 0.55 * len(layers) + 2.5), 3.8)
    ax = fig.subplots()
    xs = list(range(len(layers)))
    for i, (name, ys) in enumerate(correlations.items()):
        style = _style(name, i)
        for row in (per_image or {}).get(name, []):
            ax.plot(xs, list(row), color=style["color"], alpha=0.2, linewidth=1)
        ax.plot(xs, list(ys), marker="o", label=f"{name} (final {ys[-1]:.2f})", **style)
    ax.axhline(0, color="0.5", linewidth=0.8)
    ax.set_xticks(xs)
    ax.set_xticklabels(["none" if n == "none" else f"+{n}" for n in layers], rotation=40, ha="right", fontsize=8)
    ax.set_xlabel("layers randomized (cumulative, from the logits down)")
    ax.set_ylabel("Spearman ρ with the original map")
    lows = [min(ys) for ys in correlations.values()] + [min(r) for rows in (per_image or {}).values() for r in rows]
    ax.set_ylim(min(-0.2, min(lows) - 0.05), 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title or "model-parameter randomization: a faithful map should fall towards 0", fontsize=10)
    fig.tight_layout()
    return _to_image(fig)
