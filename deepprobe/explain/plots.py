"""Plots of an evaluation as PIL images: mean curves per metric, the methods x metrics table, the sanity curve.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global figure state, no display needed).
Inputs are plain lists of numbers, so the plots can be redrawn from a JSON sidecar.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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


@dataclass
class Panel:
    """One curve panel: a line per map (name -> y values over `xs`), each labelled with its number."""

    title: str
    xlabel: str
    ylabel: str
    xs: Sequence
    curves: Mapping[str, Sequence[float]]
    numbers: Mapping[str, float] = field(default_factory=dict)  # shown in the legend, e.g. the AUC
    number_name: str = ""


def curves_plot(panels: Sequence[Panel], title: str = "") -> Image.Image:
    """Mean curves of every map, one panel per curve metric (up to three per row)."""
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = _figure(4.6 * cols, 3.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, panel in zip(axes, panels):
        numeric = all(isinstance(v, (int, float)) for v in panel.xs)
        xs = list(panel.xs) if numeric else list(range(len(panel.xs)))
        for i, (name, ys) in enumerate(panel.curves.items()):
            number = panel.numbers.get(name)
            label = name if number is None else f"{name} ({panel.number_name} {number:.3g})"
            ax.plot(xs, list(ys), label=label, **_style(name, i))
        if not numeric:
            ax.set_xticks(xs)
            ax.set_xticklabels([str(v) for v in panel.xs], rotation=40, ha="right", fontsize=7)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.set_title(panel.title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _to_image(fig)


def table_plot(rows: Sequence[str], columns: Sequence[str], means: Mapping[str, Mapping[str, float | None]],
               halves: Mapping[str, Mapping[str, float | None]], higher: Mapping[str, bool],
               best: Mapping[str, Sequence[str]], title: str = "") -> Image.Image:
    """Methods x metrics: mean +- half the 95% interval; each column shaded from worst (light) to best (dark),
    bold where a method is best or not significantly worse than the best (`best[metric]`)."""
    import numpy as np

    fig = _figure(1.6 + 1.45 * len(columns), 0.9 + 0.42 * len(rows))
    ax = fig.subplots()
    ax.set_axis_off()
    shade = np.zeros((len(rows), len(columns)))
    for j, metric in enumerate(columns):
        column = [means[r].get(metric) for r in rows]
        known = [v for v in column if v is not None]
        lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
        for i, v in enumerate(column):
            if v is not None and hi > lo:
                shade[i, j] = (v - lo) / (hi - lo) if higher[metric] else (hi - v) / (hi - lo)
    cells = [[_cell(means[r].get(m), halves[r].get(m)) for m in columns] for r in rows]
    colours = [[(1 - 0.45 * shade[i, j], 1 - 0.2 * shade[i, j], 1 - 0.45 * shade[i, j]) for j in range(len(columns))]
               for i in range(len(rows))]
    headers = [f"{m}\n{'↑' if higher[m] else '↓'}" for m in columns]
    table = ax.table(cellText=cells, cellColours=colours, rowLabels=list(rows), colLabels=headers, loc="center",
                     cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.6)
    for (i, j), cell in table.get_celld().items():
        if i == 0:
            cell.set_height(cell.get_height() * 1.6)
        elif j >= 0 and rows[i - 1] in best.get(columns[j], ()):
            cell.get_text().set_fontweight("bold")
    ax.set_title(title or "mean ± half the 95% interval; bold: best or not significantly worse", fontsize=9)
    fig.tight_layout()
    return _to_image(fig)


def _cell(mean: float | None, half: float | None) -> str:
    if mean is None:
        return "n/a"
    text = f"{mean:.3g}"
    return f"{text} ± {half:.2g}" if half is not None else text


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
