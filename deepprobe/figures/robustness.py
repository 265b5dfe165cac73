"""`robustness`'s numbers as an HTML table for notebooks (the accuracy plot is `techniques/robustness_plot.py`),
and depth robustness's table and AbsRel plot."""
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


def depth_robustness_title(model_title: str, summary: dict) -> str:
    return f"{model_title} · {summary['n']} images"


def abs_rel_rows(summary: dict, norm: str) -> tuple[list[str], list[list[str]]]:
    """The terminal's table of depth robustness: eps | mean AbsRel | its 95% interval, in the eps order given."""
    rows = []
    for key, stats in summary["abs_rel"].items():
        eps = summary["per_eps"][key]["eps"]
        rows.append([f"{eps * 255:g}/255" if norm == "linf" else f"{eps:g}",
                     "–" if stats is None else f"{stats['mean']:.4g}",
                     "–" if stats is None else f"{stats['ci95'][0]:.3g}–{stats['ci95'][1]:.3g}"])
    return ["eps", "AbsRel (mean)", "95% interval"], rows


def depth_robustness_html(summary: dict, norm: str, title: str) -> str:
    """abs_rel_rows as HTML, captioned with what was measured (and the clean AbsRel against ground truth)."""
    from ..display import html_table

    clean = summary["clean_abs_rel"]
    header, rows = abs_rel_rows(summary, norm)
    caption = f"{title} · {summary['measure']}" + (f"; clean AbsRel {clean['mean']:.4g}" if clean else "")
    return html_table(header, rows, caption)


def abs_rel_plot(summary: dict, norm: str = "linf", title: str = ""):
    """Mean AbsRel (95% interval bars) against eps, from a depth robustness summary (a PIL image)."""
    from ..explain.plots import COLORS, _figure, _to_image

    per_eps = summary["per_eps"]
    keys = sorted(per_eps, key=lambda k: per_eps[k]["eps"])
    scale = 255.0 if norm == "linf" else 1.0
    points = [(per_eps[k]["eps"] * scale, summary["abs_rel"][k]) for k in keys if summary["abs_rel"][k]]
    fig = _figure(6.4, 4.2)
    ax = fig.subplots()
    xs = [x for x, _ in points]
    ys = [s["mean"] for _, s in points]
    ax.errorbar(xs, ys, yerr=[[y - s["ci95"][0] for y, (_, s) in zip(ys, points)],
                              [s["ci95"][1] - y for y, (_, s) in zip(ys, points)]],
                color=COLORS[0], marker="o", linewidth=2, capsize=3, label="under attack, 95% interval")
    clean = summary.get("clean_abs_rel")
    if clean:
        ax.axhline(clean["mean"], color="0.5", linestyle=":", linewidth=1, label=f"clean {clean['mean']:.3g}")
    ax.set_xlabel("eps (L-inf, in 1/255)" if norm == "linf" else "eps (L2, [0,1] units)")
    ax.set_ylabel(f"AbsRel against the {summary['reference']}")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or f"relative depth error under attack, n = {summary['n']}", fontsize=10)
    fig.tight_layout()
    return _to_image(fig)
