"""Make docs/evaluate_plot.png (curves above, sanity below) from the `--json` summary of a `deepprobe evaluate` run:

    deepprobe evaluate examples/*.jpg -M gradcam -M gradcam++ -M saliency -M ig --json > /tmp/evaluate.json
    python docs/evaluate_plot.py /tmp/evaluate.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

from deepprobe.explain.plots import curves_plot, sanity_plot


def main(summary_file: str, out: str = str(Path(__file__).with_name("evaluate_plot.png"))) -> None:
    run = json.loads(Path(summary_file).read_text().strip().splitlines()[-1])
    ev, opts = run["evaluation"], run["options"]
    curves, sanity = ev["curves"], ev["sanity"]
    methods = [k for k in sanity if k != "layers"]
    photos = len(run["results"])
    top = curves_plot(ev["fractions"], {n: c["deletion_curve"] for n, c in curves.items()},
                      {n: c["insertion_curve"] for n, c in curves.items()},
                      {n: c["deletion_auc"] for n, c in curves.items()},
                      {n: c["insertion_auc"] for n, c in curves.items()},
                      title=f"{run['model']} · mean of {photos} example photos · {opts['steps']} steps · deleted -> "
                            f"{opts['deletion_fill']}, inserted into {opts['insertion_fill']}")
    bottom = sanity_plot(sanity["layers"], {m: sanity[m]["spearman"] for m in methods},
                         {m: sanity[m]["per_image"] for m in methods},
                         title=f"cascading randomization · mean of {photos} photos (thin: each photo)")
    canvas = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height), "white")
    canvas.paste(top, (0, 0))
    canvas.paste(bottom, ((canvas.width - bottom.width) // 2, top.height))
    canvas.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(out, Path(out).stat().st_size, "bytes")


if __name__ == "__main__":
    main(*sys.argv[1:])
