"""Accuracy against the attack budget, with each stage of the cascade, drawn from a robustness summary."""
from __future__ import annotations

from PIL import Image

from ..explain.plots import COLORS, _figure, _to_image


def accuracy_plot(summary: dict, title: str = "") -> Image.Image:
    """Robust accuracy (Wilson 95% bars) and the accuracy after each attack of the cascade, vs eps."""
    per_eps = summary["per_eps"]
    keys = sorted(per_eps, key=lambda k: per_eps[k]["eps"])
    linf = summary["config"]["norm"] == "linf"
    scale = 255.0 if linf else 1.0
    xs = [per_eps[k]["eps"] * scale for k in keys]
    clean = summary["clean_accuracy"] or 0.0
    lead = [] if 0.0 in xs else [0.0]  # eps 0 is the clean accuracy
    fig = _figure(6.4, 4.2)
    ax = fig.subplots()
    stages = list(summary["stage_accuracy"][keys[0]]) if keys else []
    for i, stage in enumerate(stages[:-1]):
        ys = [clean] * len(lead) + [summary["stage_accuracy"][k][stage] for k in keys]
        ax.plot(lead + xs, ys, linestyle="--", linewidth=1.2, marker=".", color=COLORS[(i + 1) % len(COLORS)],
                label=f"after {stage}")
    ys = [clean] * len(lead) + [summary["robust_accuracy"][k] for k in keys]
    bounds = [summary["ci95"]["clean_accuracy"]] * len(lead) + [summary["ci95"]["robust_accuracy"][k] for k in keys]
    below = [y - lo for y, (lo, _) in zip(ys, bounds)]
    above = [hi - y for y, (_, hi) in zip(ys, bounds)]
    label = "robust" + (f" (after {stages[-1]})" if len(stages) > 1 else f" ({stages[0]})" if stages else "")
    ax.errorbar(lead + xs, ys, yerr=[below, above], color=COLORS[0], marker="o", linewidth=2, capsize=3,
                label=label + ", Wilson 95%")
    ax.axhline(clean, color="0.5", linestyle=":", linewidth=1, label=f"clean {clean:.1%}")
    ax.set_xlabel("eps (L-inf, in 1/255)" if linf else "eps (L2, [0,1] units)")
    measure = "prediction robustness" if summary.get("labels") == "predictions" else "accuracy"
    ax.set_ylabel(measure)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title or f"{measure} under attack, n = {summary['n']}", fontsize=10)
    fig.tight_layout()
    return _to_image(fig)
