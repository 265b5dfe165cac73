"""`deepprobe fool`: adversarial examples (pgd, fgsm, szegedy, cw) checked on the saved PNG.

`--from-noise` (Nguyen et al.) is a different technique behind the same command; it lives in cli/noise.py.
"""
from __future__ import annotations

import math
from pathlib import Path

import typer

from ..errors import DeepprobeError
from ..options.fool import DEFAULT_CONFIDENCE, DEFAULT_STEPS, METHODS, Options
from . import app
from .common import command, err_console, opt, out_console
from .gallery import EMBEDDERS
from .prompts import apply_prompts, labels_option, text_option
from .regions import PANEL, box_option, point_option, refuse_spatial, region_option


@command(app, "fool")
def fool_cmd(run, images: list[str] = typer.Argument(None, help="Images (files, folders or globs) to attack."),
             target: list[str] = typer.Option(None, "--target", "-t",
                                              help="Class to reach (name or index); repeat for several. "
                                                   "Without it the attack is untargeted."),
             vanish: list[str] = typer.Option(None, "--vanish", help="Detectors and segmenters: make this class "
                                                                     "disappear (repeat for several; 'all' for "
                                                                     "every class). Segment Anything: the "
                                                                     "prompts' masks vanish ('all' or nothing)."),
             source: list[str] = typer.Option(None, "--source", help="Detectors and segmenters with --target: the "
                                                                     "classes to turn into it (default: all)."),
             method: str = opt(Options, "method", help="pgd | fgsm | szegedy | cw (with --from-noise: evolve | cppn | "
                                                       "gradient); detectors and segmenters: dag (default) | pgd."),
             norm: str = opt(Options, "norm", help="pgd/fgsm budget norm: linf | l2."),
             eps: str = opt(Options, "eps", help="pgd/fgsm budget, e.g. 8/255 (default 8/255 for linf, 1.0 for l2; at most 1 "
                                                     "for linf)."),
             alpha: str = opt(Options, "alpha", help="pgd step size (default eps/4; at most 1 for linf)."),
             steps: int = opt(Options, "steps", help="pgd: most steps (stops early); szegedy/cw: steps per c "
                                                     f"(default {DEFAULT_STEPS})."),
             lr: str = opt(Options, "lr", help="Step size of szegedy's L-BFGS (1.0) / cw's Adam (0.01); pgd: --alpha."),
             kappa: str = opt(Options, "kappa", help="Logit margin to aim past, so 8-bit rounding cannot undo it."),
             confidence: str = opt(Options, "confidence",
                                   help="Targeted: go on until the saved 8-bit image gives the target at least this "
                                        f"probability (default {DEFAULT_CONFIDENCE:g}; with --from-noise 0.99), "
                                        "within the same --eps/--steps budget; the JSON says whether it was reached. "
                                        "0: stop as soon as the target is on top. fgsm takes its one step "
                                        "regardless."),
             rounds: int = opt(Options, "rounds", help="pgd: extra rounds for images the saved 8-bit version loses."),
             search_steps: int = opt(Options, "search_steps", help="szegedy/cw: rounds of the search over c."),
             c: str = opt(Options, "c", help="szegedy/cw: first constant c of the search."),
             batch_size: int = opt(Options, "batch_size", help="Images attacked together."),
             amplify: str = opt(Options, "amplify", help="Panel: show the perturbation times this (default: auto)."),
             min_score: str = opt(Options, "min_score", help="Detectors: a box counts at or above this score."),
             from_noise: bool = typer.Option(False, "--from-noise",
                                             help="Grow unrecognizable images the model labels as each --target "
                                                  "(Nguyen et al. 2015); no IMAGES needed."),
             reference: str = typer.Option(None, "--reference", help="Embedders: pull each image's embedding "
                                           "toward this image's.", rich_help_panel=EMBEDDERS),
             away: bool = typer.Option(False, "--away", help="Embedders: push each image's embedding away from "
                                       "its own.", rich_help_panel=EMBEDDERS),
             gallery: str = typer.Option(None, "--gallery", help="Embedders: judge retrieval on this folder of "
                                         "images (class sub-folders also give the k-NN class).",
                                         rich_help_panel=EMBEDDERS),
             text: list[str] = text_option(), labels: str = labels_option(),
             target_text: list[str] = typer.Option(None, "--target-text",
                                                   help="CLIP: the prompt to reach, e.g. 'a photo of an ostrich' "
                                                        "(added to the --text/--labels prompts); repeat for several.",
                                                   rich_help_panel="Image-text (CLIP)"),
             point: list[str] = point_option(), box: list[str] = box_option(),
             region: str = region_option("to move (with --nearer or --farther)"),
             nearer: bool = typer.Option(False, "--nearer", help="Depth: make --region look nearer by --factor.",
                                         rich_help_panel=PANEL),
             farther: bool = typer.Option(False, "--farther", help="Depth: make --region look farther by --factor.",
                                          rich_help_panel=PANEL),
             factor: str = opt(Options, "factor", help="Depth: how much nearer/farther the region should look.",
                               rich_help_panel=PANEL)):
    """Make images the model misclassifies (as --target, or as anything else) while they look unchanged.

    Writes NAME_fool_TARGET.png at the model's input size (so `deepprobe classify` reads it back as is),
    NAME_fool_TARGET_panel.png (original | amplified perturbation | adversarial) and JSON sidecars.
    A targeted attack goes on until the target reaches --confidence (0.9) within the budget.
    Success, class and probabilities are measured on the saved PNG, re-read from disk.

    Detectors: --vanish CLASS|all hides boxes, --target CLASS relabels them (of --source classes: a target box
    on each, none of them left, no new target box elsewhere); segmenters: --target CLASS turns the --source
    classes' pixels into it, --vanish CLASS into background. DAG (Xie et al. 2017) by default, or --method pgd
    inside --eps (TOG). Writes NAME_fool_GOAL.png and a panel with the boxes or classes before and after;
    success is checked on the saved PNG.

    CLIP (hf:DIR): the classes are the --text/--labels prompts, and --target-text names the prompt to reach.

    Embedders (DINO, CLIP/SigLIP image towers): --reference IMG pulls each embedding toward IMG's, --away pushes
    it from its own (PGD inside --eps); judged on the saved PNG by cosine similarity and, with --gallery DIR, by
    the nearest gallery image (and the k-NN class of a gallery of class folders).

    Segment Anything (hf:DIR): the mask of each --point/--box prompt vanishes (SAM's chosen mask on the saved PNG
    overlaps the clean one by IoU < 0.1). Depth estimators: --region looks --nearer or --farther by --factor on
    the saved PNG. Both PGD inside --eps (8/255)."""
    opts = run.options
    if from_noise:
        # Hook for `fool --from-noise`: cli/noise.py owns it. method/steps/lr are None unless the user (or a
        # recipe) set them, so the noise technique applies its own defaults.
        from .noise import fool_from_noise_cmd

        if text or labels or target_text:
            raise DeepprobeError("--from-noise works on classifiers; --text/--labels/--target-text do not apply")
        return fool_from_noise_cmd(run, images=images or [], targets=target or [], method=opts.method,
                                   steps=opts.steps, lr=opts.lr, confidence=opts.confidence)
    if not images:
        raise DeepprobeError("give at least one image to fool (or --from-noise with --target)")
    bundle = run.bundle()
    refuse_spatial(bundle, point, box, region)
    if bundle.task == "embedding":
        from .fool_embedding import fool_embedder_images

        if target or vanish or source or text or labels or target_text:
            raise DeepprobeError(f"{bundle.spec} is an embedder: it has no classes; use --reference IMG or --away")
        return fool_embedder_images(run, bundle, images, reference, away, gallery, opts)
    if reference or away or gallery:
        raise DeepprobeError(f"--reference, --away and --gallery apply to embedders; {bundle.spec} is a "
                             f"{bundle.task} model")
    if bundle.task in ("promptable-segmentation", "depth") or nearer or farther:
        from .fool_foundation import fool_sam_or_depth

        classes = bool(text or labels or target_text or target or source)
        return fool_sam_or_depth(run, bundle, images, point, box, region, nearer, farther, vanish or [], classes,
                                 opts)
    if bundle.task in ("detection", "segmentation"):
        from .fool_tasks import fool_task_images

        if text or labels or target_text:
            raise DeepprobeError("--text/--labels/--target-text apply to image-text models (CLIP); "
                                 f"{bundle.spec} is a {bundle.task} model")
        return fool_task_images(run, bundle, images, target or [], vanish or [], source or [], opts)
    if vanish or source:
        raise DeepprobeError(f"--vanish and --source apply to detectors and segmenters; {bundle.spec} is "
                             f"a {bundle.task} model")
    return _attack_images(run, images, target or [], opts, text or [], labels, target_text or [])


def _attack_images(run, images: list[str], target_names: list[str], opts: Options, text: list[str],
                   labels: str | None, target_texts: list[str]) -> int:
    import torch

    from ..io import quantize
    from ..models.bundle import require_classifier
    from ..techniques.fool import attack, options_dict
    from .inputs import batches, image_paths

    kwargs = options_dict(opts)
    if kwargs["method"] not in METHODS:
        raise DeepprobeError(f"unknown --method {kwargs['method']!r} for attacks (choose from {', '.join(METHODS)};"
                             " evolve/cppn/gradient need --from-noise)")
    bundle = run.bundle()
    if target_texts and bundle.task != "image-text":
        raise DeepprobeError(f"--target-text applies to image-text models (CLIP); {bundle.spec} is a "
                             f"{bundle.task} model: use --target")
    apply_prompts(run, bundle, text, labels, extra=target_texts)
    require_classifier(bundle)
    targets = [bundle.class_index(name) for name in [*target_names, *target_texts]] or [None]
    paths = image_paths(run, images)
    per_batch = _budget(kwargs)
    n_batches = math.ceil(len(paths) / opts.batch_size)
    table = _Table(bundle, kwargs)
    interrupted = False
    with run.progress() as progress:
        task = progress.add_task(f"fool ({kwargs['method']})", total=n_batches * per_batch, info="")
        for b, (chunk_paths, x) in enumerate(batches(run, bundle, paths, opts.batch_size)):
            # The original as an 8-bit image would hold it: budgets are then exact on the saved file.
            x = quantize(x)
            xs = x.repeat(len(targets), 1, 1, 1)
            ts = None if targets == [None] else torch.tensor(targets).repeat_interleave(x.shape[0])
            callback = _callback(progress, task, bundle, b * per_batch, f"batch {b + 1}/{n_batches}")
            result = attack(bundle, xs, ts, seed=run.common.seed + b, callback=callback, **kwargs)
            progress.update(task, completed=(b + 1) * per_batch)
            pairs = [(p, t) for t in targets for p in chunk_paths]
            _save(run, bundle, result, pairs, opts, table)
            if result.stopped in ("interrupted", "nan"):
                err_console.print(f"[yellow]{result.message}[/yellow]")
                interrupted = result.stopped == "interrupted"
                if interrupted:
                    break
    table.show(run)
    _warn_below_confidence(run.results, kwargs)
    code = run.finish()
    return 130 if interrupted else code


def _budget(kwargs: dict) -> int:
    """Progress-bar steps one batch can take."""
    if kwargs["method"] == "fgsm":
        return 1
    if kwargs["method"] in ("szegedy", "cw"):
        return kwargs["steps"] * kwargs["search_steps"]
    return kwargs["steps"]


def _callback(progress, task, bundle, base: int, label: str):
    """Engine progress -> one bar over all batches, with loss and the current top class of the first image."""
    def callback(step: int, _total: int, loss: float, fwd) -> None:
        info = f"{label} · loss {loss:.4g}"
        if fwd is not None and fwd.logits is not None and bundle.labels:
            info += f" · top: {bundle.class_name(int(fwd.logits[0].argmax()))}"
        progress.update(task, completed=base + step, info=info)
    return callback


def _save(run, bundle, result, pairs: list[tuple[Path, int | None]], opts: Options, table: _Table) -> None:
    """Write each adversarial PNG and its panel, then re-read the PNGs from disk to measure what was saved."""
    import torch

    from ..figures.fool import fool_panel
    from ..io import name_slug, safe_stem

    records = result.records(bundle)
    saved = []
    for i, ((path, target), record) in enumerate(zip(pairs, records)):
        name = f"{safe_stem(path)}_fool" + (f"_{name_slug(bundle.class_name(target))}" if target is not None else "")
        record = {"input": str(path), **record, "loss_curve": [round(v, 5) for v in result.losses]}
        out = run.save_image(result.images[i], f"{name}.png", result=record)
        saved.append((out, record, name))
    # Independent check on the files as written: a fresh read, the model's own preprocessing, one forward pass.
    reread = torch.cat([bundle.load_image(out) for out, *_ in saved])
    probs = bundle.predict(reread)
    for (out, record, name), p, i in zip(saved, probs, range(len(saved))):
        top = int(p.argmax())
        goal = record["target"]
        ok = bundle.class_name(top) == goal if goal is not None else bundle.class_name(top) != record["original_class"]
        record.update(final_class=bundle.class_name(top), final_probability=round(float(p[top]), 6), success=ok,
                      checked_on="saved PNG")
        if goal is not None:
            p_target = float(p[bundle.class_index(goal)])
            record.update(target_probability=round(p_target, 6),
                          confidence_reached=ok and p_target >= record["confidence"])
        figure = fool_panel(result.original[i], result.images[i], record, Path(record["input"]).name, opts.amplify)
        panel_path = run.save_image(figure, f"{name}_panel.png",
                                    result={"input": record["input"], "adversarial": str(out)})
        record.update(output=str(out), panel=str(panel_path))
        run.add_result(record)
        table.add(record)


def _warn_below_confidence(results: list[dict], kwargs: dict) -> None:
    """Say so (stderr) when the budget could not bring a targeted image to the asked confidence."""
    short = [r for r in results if r["target"] and r["confidence"] and not r["confidence_reached"]]
    if not short:
        return
    from ..options.fool import eps_for

    method, eps = kwargs["method"], eps_for(kwargs["norm"], kwargs["eps"])
    radius = f"L-inf {eps * 255:.3g}/255" if kwargs["norm"] == "linf" else f"L2 {eps:g}"
    budget = {"pgd": f"{radius}, {kwargs['steps']} steps", "fgsm": f"{radius}, fgsm's one step"}.get(
        method, f"{kwargs['steps']} steps x {kwargs['search_steps']} values of c")
    err_console.print(f"[yellow]{len(short)} of {len(results)} targeted image(s) did not reach the asked confidence "
                      f"{short[0]['confidence']:g} on the saved PNG within the budget ({budget}): "
                      + ", ".join(f"{Path(r['input']).name} → {r['target']} {r['target_probability']:.1%}"
                                  for r in short[:5]) + (" ..." if len(short) > 5 else "")
                      + "; raise --eps/--steps, or lower --confidence[/yellow]")


class _Table:
    """A summary table printed after the run (not with --quiet/--json)."""

    def __init__(self, bundle, kwargs: dict):
        from rich.table import Table

        self.table = Table(title=f"{bundle.title} · {kwargs['method']} on {bundle.device}")
        for column in ("image", "original", "adversarial (saved PNG)", "fooled", "L-inf x255", "L2", "steps"):
            self.table.add_column(column)

    def add(self, r: dict) -> None:
        fooled = "[green]yes[/green]" if r["success"] else "[red]no[/red]"
        if r["success"] and r["target"] and r["confidence"] and not r["confidence_reached"]:
            fooled = f"[yellow]yes, below {r['confidence']:.0%}[/yellow]"
        self.table.add_row(Path(r["input"]).name + (f" → {r['target']}" if r["target"] else ""),
                           f"{r['original_class']} [dim]{r['original_probability']:.1%}[/dim]",
                           f"{r['final_class']} [dim]{r['final_probability']:.1%}[/dim]", fooled,
                           f"{r['linf_255']:g}", f"{r['l2']:.3f}", str(r["steps"]))

    def show(self, run) -> None:
        if run.show_progress and self.table.row_count:
            out_console.print(self.table)
