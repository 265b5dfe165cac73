"""`deepprobe fool --from-noise`: unrecognizable images the model labels as each target (Nguyen et al. 2015).

Reached through `deepprobe fool --from-noise --target T [--target T2 ...] --method evolve|cppn|gradient`;
cli/fool.py hands the run over to `fool_from_noise_cmd`.
"""
from __future__ import annotations

from ..errors import DeepprobeError
from ..options.noise import METHODS, Options, steps_for
from .common import err_console, out_console


def fool_from_noise_cmd(run, targets: list[str], method: str | None = None, steps: int | None = None,
                        lr: float | None = None, images: list[str] | None = None,
                        confidence: float | None = None) -> int:
    """Grow one image per target, save each (at the model's input size) and a captioned grid.

    method/steps/lr/confidence are None when the user did not set them (the noise defaults then apply).
    Confidence in the JSON is measured on the saved PNGs, re-read from disk.
    """
    defaults = Options()
    method = method or defaults.method
    if method not in METHODS:
        raise DeepprobeError(f"--method for --from-noise must be one of {', '.join(METHODS)}, got {method!r}")
    if images:
        raise DeepprobeError("--from-noise starts from noise and takes no IMAGES (give only --target)")
    if not targets:
        raise DeepprobeError("--from-noise needs at least one --target class, e.g. --target 'king penguin'")
    bundle = run.bundle()
    index = [bundle.class_index(t) for t in targets]  # unknown classes fail here, before any work
    total = steps_for(method, steps)
    kwargs = {key: value for key, value in (("lr", lr), ("confidence", confidence)) if value is not None}
    budget = total + (defaults.refine_steps if method != "gradient" else 0)
    with run.progress() as progress:
        task = progress.add_task(f"from noise ({method})", total=budget, info="")

        def callback(step: int, _total: int, best: list[float], phase: str) -> None:
            shown = " ".join(f"{p:.3f}" for p in best[:4]) + (" ..." if len(best) > 4 else "")
            progress.update(task, completed=step, info=f"{phase} · best p(target) {shown}")

        from ..techniques.noise import fool_from_noise

        result = fool_from_noise(bundle, index, method, steps=total, seed=run.common.seed, callback=callback,
                                 **kwargs)
        progress.update(task, completed=budget)
    if result.stopped == "interrupted":
        err_console.print("[yellow]interrupted; saving the best images so far[/yellow]")
    _save(run, bundle, result)
    code = run.finish()
    return 130 if result.stopped == "interrupted" else code


def _save(run, bundle, result) -> None:
    import torch

    from ..figures.fool import noise_grid
    from ..io import name_slug

    records = result.records(bundle)
    paths = []
    for i, record in enumerate(records):
        record.pop("loss_curve", None)
        path = run.save_image(result.images[i], f"noise_{result.method}_{name_slug(record['target'])}.png", result=record)
        paths.append(path)
    # Independent check of what was written: re-read each PNG, the model's own preprocessing, one forward.
    probs = bundle.predict(torch.cat([bundle.load_image(p) for p in paths]))
    for i, (record, path) in enumerate(zip(records, paths)):
        p = float(probs[i, record["target_index"]])
        top = int(probs[i].argmax())
        record.update(confidence=round(p, 6), predicted=bundle.class_name(top), checked_on="saved PNG",
                      success=top == record["target_index"] and p >= result.threshold)
        run.add_result({k: v for k, v in record.items() if k != "best_fitness_curve"} | {"output": str(path)})
    figure = noise_grid(result.images, records, result.method, any(result.refined_with_gradient))
    grid_path = run.save_image(figure, f"noise_{result.method}_grid.png",
                               result={"grid": True, "targets": [r["target"] for r in records]})
    run.summary.update(method=result.method, grid=str(grid_path), evaluations=result.evaluations,
                       success=all(r["success"] for r in records))
    if run.show_progress:
        from rich.table import Table

        table = Table(title=f"{bundle.title} · from noise ({result.method})")
        for column in ("target", "confidence (saved PNG)", "success", "generations/steps", "refined"):
            table.add_column(column)
        for r in records:
            table.add_row(r["target"], f"{r['confidence']:.2%}", "[green]yes[/green]" if r["success"] else "[red]no[/red]",
                          str(r["steps"]), f"{r['refine_steps']} steps" if r["refined_with_gradient"] else "no")
        out_console.print(table)
        out_console.print(f"grid: {grid_path}")
