"""`evaluate`'s figures from a run summary (`summarize_records`): mean curves, the sanity cascade, the table of
methods x metrics; and the same table as HTML for notebooks."""
from __future__ import annotations

from PIL import Image

from ..options.evaluate import METRICS

_CURVES = {"deletion": ("deletion (lower is better)", "fraction of pixels deleted", "target probability"),
           "insertion": ("insertion (higher is better)", "fraction of pixels inserted", "target probability"),
           "pixel-flipping": ("pixel-flipping (lower is better)", "fraction of features flipped",
                              "target probability"),
           "region-perturbation": ("region perturbation, MoRF (higher is better)", "patches removed",
                                   "f(x) - f(x_k)"),
           "road": ("ROAD, MoRF (solid) vs LeRF", "% of pixels imputed", "accuracy")}


def half_interval(entry: dict) -> float | None:
    low, high = entry["ci95"]
    return None if low is None or high is None else (high - low) / 2


def leaders(summary: dict) -> dict[str, list[str]]:
    """Per metric: the best method and those the paired test cannot tell from it."""
    out = {}
    for metric, ranking in summary["ranking"].items():
        if not ranking["order"]:
            continue
        best = ranking["order"][0]
        tied = {p["worse"] for p in ranking["pairs"] if p["better"] == best and not p["significant"]}
        out[metric] = [best, *sorted(tied)]
    return out


def evaluate_plots(summary: dict, metrics: list[str], model_title: str, images: int) -> dict[str, Image.Image]:
    """{"curves": mean curves of the curve metrics, "sanity": the randomization cascade, "table": methods x
    metrics}, as PIL images (only those the metrics make)."""
    from ..explain.plots import Panel, curves_plot, sanity_plot, table_plot

    out = {}
    curves, axes, table = summary["curves"], summary["axes"], summary["metrics"]
    panels = []
    for metric in [m for m in metrics if m in _CURVES and m in curves]:
        title, xlabel, ylabel = _CURVES[metric]
        numbers = {name: per[metric]["mean"] for name, per in table.items() if metric in per}
        for key, lines in curves[metric].items():
            if metric == "road" and key == "curve":
                continue  # the MoRF curve, drawn with LeRF below
            label = title if metric != "road" else f"ROAD, {key.split('_')[0].upper()} accuracy"
            xs = axes.get(metric) or list(range(len(next(iter(lines.values())))))
            panels.append(Panel(label, xlabel, ylabel, xs, lines, numbers if key == "curve" else {}, "mean"))
    if panels:
        out["curves"] = curves_plot(panels, title=f"{model_title} · mean of {images} image(s)")
    if "sanity" in curves and "curve" in curves["sanity"]:
        lines = curves["sanity"]["curve"]
        out["sanity"] = sanity_plot(axes.get("sanity") or list(range(len(next(iter(lines.values()))))), lines,
                                    title=f"{model_title} · cascading randomization · mean of {images} image(s)")
    names = list(table)
    higher = {m: METRICS[m][1] for m in metrics}
    out["table"] = table_plot(names, metrics, {n: {m: table[n][m]["mean"] for m in metrics} for n in names},
                              {n: {m: half_interval(table[n][m]) for m in metrics} for n in names}, higher,
                              leaders(summary), title=f"{model_title} · {images} image(s) · mean ± half the 95% "
                                                      f"interval; bold: best or not significantly worse")
    return out


def cell_text(entry: dict) -> str:
    """'0.123 ± 0.04' (mean ± half the 95% interval), 'n/a' where undefined."""
    half = half_interval(entry)
    return "n/a" if entry["mean"] is None else f"{entry['mean']:.3g}" + (f" ± {half:.2g}" if half else "")


def evaluate_html(summary: dict, metrics: list[str], caption: str) -> str:
    """Methods (and baselines) x metrics as an HTML table, leaders in bold, as the terminal shows it."""
    from ..display import html_table

    best = leaders(summary)
    names = list(summary["metrics"])
    rows = [[name] + [cell_text(summary["metrics"][name][m]) for m in metrics] for name in names]
    bold = {(r, k + 1) for r, name in enumerate(names) for k, m in enumerate(metrics) if name in best.get(m, ())}
    header = ["map"] + [f"{m} {'↑' if METRICS[m][1] else '↓'}" for m in metrics]
    return html_table(header, rows, caption, bold)
