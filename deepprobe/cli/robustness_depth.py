"""`deepprobe robustness DATA` on a depth estimator: the relative-depth error (AbsRel) under attack at each eps.

Called by cli/robustness.py once the model's task is known; the data layer is the same (resumable run folder,
torchrun shards), the per-batch function is techniques/depth_robustness.DepthBatchAttack.
"""
from __future__ import annotations

from ..errors import DeepprobeError
from ..options.attacks import DEFAULT_CASCADE
from ..options.robustness import Options
from .common import err_console, out_console

PLOT = "robustness_depth.png"
EXAMPLES = "examples"


def measure_depth(run, ctx, bundle, data: list[str], opts: Options, depth_maps: str | None) -> int:
    from pathlib import Path

    from ..data import open_dataset, select
    from ..data.runner import Hooks, run_dataset
    from ..options.robustness import eps_for
    from ..techniques.depth_robustness import DepthBatchAttack
    from .ranks import skip_note

    if list(opts.attack) != list(DEFAULT_CASCADE):
        raise DeepprobeError("on a depth estimator robustness runs PGD on the depth (--eps, --norm, --steps); "
                             "--attack does not apply")
    if depth_maps is not None and not Path(depth_maps).is_dir():
        raise DeepprobeError(f"--depth-maps {depth_maps} is not a folder")
    eps = eps_for(opts.norm, opts.eps)
    dataset = select(open_dataset(data, None, None, bundle.spec), limit=opts.limit, sample=opts.sample,
                     seed=run.common.seed)
    config = {"command": "robustness", "task": "depth", "model": bundle.spec, "weights": run.common.weights,
              "normalize": run.common.normalize, "data": dataset.describe(), "limit": opts.limit,
              "sample": opts.sample, "seed": run.common.seed, "batch_size": opts.batch_size, "eps": eps,
              "norm": opts.norm, "steps": opts.steps,
              "depth_maps": str(Path(depth_maps).resolve()) if depth_maps else None}
    with run.progress() as progress:
        task = progress.add_task("robustness (depth)", total=max(len(dataset.items), 1), info="")

        def stage(key: str, step: int, steps: int) -> None:
            progress.update(task, info=f"eps {key}: step {step}/{steps}")
        attack = DepthBatchAttack(bundle, eps, opts.norm, opts.steps, depth_maps, keep_images=opts.save_examples > 0,
                                  callback=stage)
        examples = _Examples(run, attack, opts.save_examples, ctx.world)
        outcome = run_dataset(dataset, attack, batch_size=opts.batch_size, seed=run.common.seed, out=run.out_dir,
                              config=config, force=run.common.force, preprocess=bundle.preprocess,
                              workers=opts.workers, ctx=ctx,
                              hooks=Hooks(progress=lambda k: progress.advance(task, k), skip=skip_note(ctx),
                                          chunk_done=examples.save),
                              also_remove=(EXAMPLES,), invocation=run.record())
    run.run_id = (outcome.folder.stored_invocation() or {}).get("run_id", run.run_id)
    if not ctx.is_main:
        return run.finish()
    return _report(run, bundle, dataset, eps, opts, config, outcome)


class _Examples:
    """Panels (photo | adversarial | depth clean | depth under attack, at the largest eps) of the first images."""

    def __init__(self, run, attack, wanted: int, world: int):
        import math

        folder = run.out_dir / EXAMPLES
        present = len(list(folder.glob("*_panel.png"))) if folder.is_dir() else 0
        self.left = math.ceil(max(0, wanted - present) / world)
        self.run, self.attack = run, attack

    def save(self, batch, records: list[dict]) -> None:
        if self.left <= 0 or self.attack.last is None:
            return
        from ..io import safe_stem
        from ..render import panel
        from ..render_sam_depth import depth_image

        clean, clean_depth, kept = self.attack.last
        key = max(kept, key=float)
        adversarial, depth = kept[key]
        sign = 1.0 if self.attack.relative else -1.0  # nearness grows as things come nearer
        for i, record in enumerate(records[:self.left]):
            near = [sign * clean_depth[i].numpy(), sign * depth[i].numpy()]
            low, high = float(min(v.min() for v in near)), float(max(v.max() for v in near))
            stem = f"{record['index']:06d}_{safe_stem(record['path']) if record['path'] else 'image'}"
            tiles = [clean[i], adversarial[i], depth_image(near[0], low, high), depth_image(near[1], low, high)]
            entry = record["eps"][key]
            captions = ["original", f"adversarial · L-inf {entry['linf'] * 255:.3g}/255", "depth, clean",
                        f"depth under attack · AbsRel {entry['abs_rel']:.3g}"]
            self.run.save_image(panel(tiles, captions, cell=min(400, max(224, int(clean.shape[-1]))),
                                      title=f"{record['path'] or record['index']} · eps {key}"),
                                f"{EXAMPLES}/{stem}_panel.png", replace=True,
                                result={"input": record["path"], "eps": key, "abs_rel": entry["abs_rel"]})
            self.left -= 1


def _report(run, bundle, dataset, eps: list[float], opts: Options, config: dict, outcome) -> int:
    from ..figures.robustness import abs_rel_plot, abs_rel_rows, depth_robustness_title
    from ..techniques.depth_robustness import DepthTally
    from .dataset_summary import publish_summary

    tally = DepthTally(eps)
    for record in outcome.records():
        tally.add(record)
    summary = tally.summary()
    summary.update(images_selected=len(dataset.items), skipped=outcome.skipped, n_skipped=len(outcome.skipped),
                   complete=outcome.complete, wall_s=round(outcome.wall_s, 3), device=str(bundle.device),
                   config=config)
    plots = []
    if summary["n"]:
        flat = {f"abs_rel_eps_{k}": (v or {}).get("mean") for k, v in summary["abs_rel"].items()}
        plots.append(run.save_image(abs_rel_plot(summary, opts.norm,
                                                 title=depth_robustness_title(bundle.title, summary)),
                                    PLOT, replace=True, result={"n": summary["n"], "reference": summary["reference"],
                                                                **flat}))
    examples = sorted((run.out_dir / EXAMPLES).glob("*_panel.png"))
    publish_summary(run, outcome, summary, plots + examples, examples)
    if run.show_progress and summary["n"]:
        from rich.table import Table

        table = Table(title=f"robustness · {bundle.title} · {summary['n']} images on {bundle.device}")
        header, rows = abs_rel_rows(summary, opts.norm)
        for column in header:
            table.add_column(column, justify="right")
        for row in rows:
            table.add_row(*row)
        out_console.print(table)
        clean = summary["clean_abs_rel"]
        out_console.print(summary["measure"] + (f"; clean AbsRel {clean['mean']:.4g}" if clean else ""))
    if not outcome.complete:
        err_console.print("[yellow]interrupted:[/yellow] run the same command again to go on")
        run.finish()
        return 130
    return run.finish()
