"""`robustness`'s numbers as an HTML table for notebooks (the plot is `techniques/robustness_plot.py`)."""
from __future__ import annotations


def robustness_title(model_title: str, summary: dict) -> str:
    config = summary["config"]
    return f"{model_title} · {summary['n']} images · {' > '.join(config['attacks'])} · {config['norm']}"


def robustness_html(summary: dict, title: str) -> str:
    """eps | accuracy after each attack | robust (Wilson 95%) | median size of the breaks, as the terminal's."""
    from ..display import html_table

    def pct(value, bounds) -> str:
        return "" if value is None else f"{value:.1%} ({bounds[0]:.0%}–{bounds[1]:.0%})"

    linf = summary["config"]["norm"] == "linf"
    keys = sorted(summary["per_eps"], key=lambda k: summary["per_eps"][k]["eps"])
    stages = list(summary["stage_accuracy"][keys[0]]) if keys else []
    rows = []
    for key in keys:
        eps = summary["per_eps"][key]["eps"]
        median = summary["per_eps"][key]["median_linf" if linf else "median_l2"]
        shown = "–" if median is None else f"{median * 255:.3g}/255" if linf else f"{median:.3g}"
        rows.append([f"{eps * 255:g}/255" if linf else f"{eps:g}",
                     *[f"{summary['stage_accuracy'][key][s]:.1%}" if summary["stage_accuracy"][key][s] is not None
                       else "" for s in stages],
                     pct(summary["robust_accuracy"][key], summary["ci95"]["robust_accuracy"][key]), shown])
    measure = "prediction robustness" if summary["labels"] == "predictions" else "accuracy"
    caption = (f"{title} · {measure}, Wilson 95% interval in brackets; clean: "
               f"{pct(summary['clean_accuracy'], summary['ci95']['clean_accuracy'])}")
    header = ["eps", *[f"after {s}" for s in stages], "robust", f"median {'L-inf' if linf else 'L2'} of breaks"]
    return html_table(header, rows, caption)
