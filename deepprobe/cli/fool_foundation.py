"""`deepprobe fool` on Segment Anything (a prompt's mask vanishes) and depth estimators (a region looks nearer or
farther by --factor). Called by cli/fool.py once the model's task is known.

One image at a time (each keeps its size), PGD inside --eps by default. As for every other model, the verdict
is measured again on the saved 8-bit PNG, read back from disk: SAM's chosen mask for the same prompt against
the clean one (IoU), the region's depth against the clean prediction (factor).
"""
from __future__ import annotations

from collections.abc import Callable

from ..errors import DeepprobeError
from ..options.fool import TASK_METHODS, Options


def fool_sam_or_depth(run, bundle, images: list[str], points, boxes, region: str | None, nearer: bool,
                      farther: bool, vanish: list[str], classes: bool, opts: Options) -> int:
    """The options cli/fool.py got, checked against the model (one line for what does not apply), then the
    attack of its task."""
    from ..models.tasks import describe_task

    if bundle.task not in ("promptable-segmentation", "depth"):
        raise DeepprobeError(f"--nearer/--farther apply to depth estimators; {bundle.spec} is "
                             f"{describe_task(bundle.task)}")
    if classes:
        raise DeepprobeError(f"{bundle.spec} has no classes: --target/--source/--text/--labels do not apply")
    if bundle.task == "depth":
        if vanish:
            raise DeepprobeError("--vanish does not apply to a depth estimator: use --region with --nearer or "
                                 "--farther")
        return fool_depth_images(run, bundle, images, region, nearer, farther, opts)
    return fool_prompt_images(run, bundle, images, points, boxes, vanish, opts)


def fool_prompt_images(run, bundle, images: list[str], points, boxes, vanish: list[str], opts: Options) -> int:
    """Each --point/--box prompt's mask made to vanish (`--vanish` may be left out, or say 'all')."""
    from ..figures.foundation import SamPictures
    from ..techniques.fool_prompt import fool_prompt
    from .sam_tasks import prompts_or_refuse

    if any(v.lower() != "all" for v in vanish):
        raise DeepprobeError("Segment Anything has no classes: fool makes the mask of each --point/--box prompt "
                             "vanish (--vanish may be left out or say 'all')")
    prompts = prompts_or_refuse(points, boxes)

    def attack(x, prompt, seed, callback):
        return fool_prompt(bundle, x, prompt, **_common(opts), kappa=opts.kappa, seed=seed, callback=callback)
    return _fool(run, bundle, images, prompts, attack, SamPictures(), opts)


def fool_depth_images(run, bundle, images: list[str], region_text: str | None, nearer: bool, farther: bool,
                      opts: Options) -> int:
    """--region made to look --nearer or --farther by --factor."""
    from ..figures.foundation import DepthPictures
    from ..techniques.fool_depth import fool_depth
    from .regions import parse_region

    if nearer == farther:
        raise DeepprobeError("say which way the region should move: --nearer or --farther (with --region "
                             "X0,Y0,X1,Y1 and --factor)")
    region = parse_region(region_text)
    if region is None:
        raise DeepprobeError("fooling a depth estimator needs --region X0,Y0,X1,Y1 (the photo's pixels)")

    def attack(x, goal, seed, callback):
        return fool_depth(bundle, x, goal, nearer=nearer, factor=opts.factor, **_common(opts), seed=seed,
                          callback=callback)
    return _fool(run, bundle, images, [region], attack, DepthPictures(), opts)


def _common(opts: Options) -> dict:
    method = opts.method or "pgd"
    if method not in TASK_METHODS:
        raise DeepprobeError(f"--method {method} does not apply here; choose {' or '.join(TASK_METHODS)}")
    return {"method": method, "eps": opts.eps, "alpha": opts.alpha or opts.lr, "steps": opts.steps,
            "rounds": opts.rounds}


def _fool(run, bundle, images: list[str], goals: list, attack: Callable, pictures, opts: Options) -> int:
    from .fool_tasks import attack_images

    method = _common(opts)["method"]  # a wrong --method fails before any image is read
    return attack_images(run, bundle, images, goals, attack, pictures, method, skip_errors=True)
