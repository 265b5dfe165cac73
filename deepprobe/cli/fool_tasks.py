"""`deepprobe fool` on detectors (boxes vanish or change class) and segmenters (pixels change class).

Called by cli/fool.py once the model's task is known. One image at a time (each keeps its size); the verdict is
measured again on the saved 8-bit PNG, read back from disk, as for classifiers. `attack_images` and `save_attack`
serve Segment Anything and depth estimators too (cli/fool_foundation.py), with their own pictures.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import DeepprobeError
from ..options.fool import DEFAULT_TASK_METHOD, TASK_METHODS, Options
from .common import err_console, out_console


def fool_task_images(run, bundle, images: list[str], targets: list[str], vanish: list[str], source: list[str],
                     opts: Options) -> int:
    from ..figures.tasks import TaskPictures
    from ..techniques.fool_tasks import fool_task

    method = opts.method or DEFAULT_TASK_METHOD
    if method not in TASK_METHODS:
        raise DeepprobeError(f"--method {method} does not apply to {bundle.spec} ({bundle.task}); choose "
                             f"{' or '.join(TASK_METHODS)}")
    if bool(targets) == bool(vanish):
        raise DeepprobeError("say what to do: --vanish CLASS (or 'all') to make it disappear, or --target CLASS "
                             "to turn it into that class")
    if source and not targets:
        raise DeepprobeError("--source names the classes --target turns into the target; with --vanish name the "
                             "classes in --vanish itself")
    goals = [{"target": t, "source": source or None} for t in targets] or [{"vanish": vanish}]
    for goal in goals:  # unknown class names fail here, before any work
        for name in ([goal["target"]] if "target" in goal else []) + list(goal.get("source") or []) + \
                [v for v in goal.get("vanish", []) if v.lower() != "all"]:
            bundle.class_index(name)

    def attack(x, goal, seed, callback):
        return fool_task(bundle, x, method=method, eps=opts.eps, alpha=opts.alpha or opts.lr, steps=opts.steps,
                         min_score=opts.min_score, kappa=opts.kappa, rounds=opts.rounds, seed=seed,
                         callback=callback, **goal)
    return attack_images(run, bundle, images, goals, attack, TaskPictures(), method)


def attack_images(run, bundle, images: list[str], goals: list, attack: Callable, pictures, method: str,
                  skip_errors: bool = False) -> int:
    """Each image (one at a time, at its own size) against each goal: `attack(x, goal, seed, callback)` gives a
    TaskAttackResult, saved and judged again on the PNG by `save_attack`; `pictures` draws the panel. With
    `skip_errors` a goal that does not apply to one image (a prompt outside it) is that image's failure and the
    others go on. Shared by every non-classifier task."""
    from ..io import quantize
    from .inputs import batches, image_paths

    paths = image_paths(run, images)
    table = _table(bundle, method)
    interrupted = False
    with run.progress() as progress:
        task = progress.add_task(f"fool ({method})", total=len(paths) * len(goals), info="")
        for i, (chunk, x) in enumerate(batches(run, bundle, paths, 1)):
            x = quantize(x)  # the original as an 8-bit file holds it
            for goal in goals:
                def callback(step, _total, loss, _fwd, name=chunk[0].name):
                    progress.update(task, info=f"{name} · step {step} · loss {loss:.4g}")
                try:
                    result = attack(x, goal, run.common.seed + i, callback)
                except DeepprobeError as exc:
                    if not skip_errors:
                        raise
                    run.fail(str(chunk[0]), str(exc))
                    continue
                finally:
                    progress.advance(task)
                save_attack(run, bundle, chunk[0], result, pictures, run.options.amplify, table)
                if result.stopped in ("interrupted", "nan"):
                    err_console.print(f"[yellow]{result.message}[/yellow]")
                    interrupted = result.stopped == "interrupted"
                    break
            if interrupted:
                break
    if run.show_progress and table.row_count:
        out_console.print(table)
    code = run.finish()
    return 130 if interrupted else code


def save_attack(run, bundle, path: Path, result, pictures, amplify: float | None, table) -> None:
    """Write the adversarial PNG, read it back, judge it again, and write the before | change | after panel
    (`pictures.tiles` draws the before and after tiles, the perturbation goes second: figures.tasks)."""
    from ..figures.tasks import attack_panel
    from ..io import name_slug, safe_stem

    record = {"input": str(path), **result.records()[0], "loss_curve": [round(v, 5) for v in result.losses]}
    name = f"{safe_stem(path)}_fool_{name_slug(result.goal.replace('->', 'to'))}"
    out = run.save_image(result.images[0], f"{name}.png", result=record)
    # Independent check on the file as written: a fresh read, the model's own preprocessing, one forward pass.
    success, share, after, notes = result.judge(bundle.load_image(out))
    record.update(success=bool(success[0]), share=round(float(share[0]), 6), after=after[0].as_dict(),
                  checked_on="saved PNG", output=str(out), **(notes[0] if notes else {}))
    figure = attack_panel(pictures, result.original[0], result.images[0], result.before[0], after[0], record,
                          path.name, amplify)
    panel_path = run.save_image(figure, f"{name}_panel.png", result={"input": str(path), "adversarial": str(out)})
    record["panel"] = str(panel_path)
    run.add_result(record)
    fooled = "[green]yes[/green]" if record["success"] else "[red]no[/red]"
    table.add_row(path.name, result.goal, *pictures.summary(result.before[0], after[0], record), fooled,
                  f"{record['share']:.0%}", f"{record['linf_255']:g}", str(record["steps"]))


def _table(bundle, method: str):
    from rich.table import Table

    table = Table(title=f"{bundle.title} · {method} on {bundle.device}")
    for column in ("image", "goal", "before", "after (saved PNG)", "fooled", "done", "L-inf x255", "steps"):
        table.add_column(column)
    return table
