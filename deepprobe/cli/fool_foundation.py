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
    from ..techniques.fool_prompt import fool_prompt
    from .sam_tasks import prompts_or_refuse

    if any(v.lower() != "all" for v in vanish):
        raise DeepprobeError("Segment Anything has no classes: fool makes the mask of each --point/--box prompt "
                             "vanish (--vanish may be left out or say 'all')")
    prompts = prompts_or_refuse(points, boxes)

    def attack(x, prompt, seed, callback):
        return fool_prompt(bundle, x, prompt, **_common(opts), kappa=opts.kappa, seed=seed, callback=callback)
    return _fool(run, bundle, images, prompts, attack, _SamPictures(), opts)


def fool_depth_images(run, bundle, images: list[str], region_text: str | None, nearer: bool, farther: bool,
                      opts: Options) -> int:
    """--region made to look --nearer or --farther by --factor."""
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
    return _fool(run, bundle, images, [region], attack, _DepthPictures(), opts)


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


class _SamPictures:
    """original + clean mask | adversarial + its mask (the perturbation tile goes between)."""

    alpha = 0.5  # the masks' opacity (fool's --alpha is the attack's step)

    def tiles(self, original, adversarial, before, after, record):
        from ..render_sam_depth import draw_mask

        tiles = [draw_mask(original, before.mask, before.prompt, self.alpha),
                 draw_mask(adversarial, after.mask, after.prompt, self.alpha)]
        return tiles, [f"original: mask {before.chosen}, area {float(before.mask.float().mean()):.1%}",
                       f"adversarial (saved PNG): mask {after.chosen}\nIoU with the clean mask "
                       f"{record['iou_with_clean']:.3f}"]

    def summary(self, before, after, record) -> tuple[str, str]:
        return f"mask {before.chosen}", f"IoU {record['iou_with_clean']:.3f} with it"

    def cell(self, width: int) -> int:
        return max(224, min(width, 400))


class _DepthPictures:
    """original | adversarial, then depth before | depth after on one colour scale, the region framed."""

    def tiles(self, original, adversarial, before, after, record):
        import numpy as np

        from ..render import draw_boxes
        from ..render_sam_depth import depth_image

        def framed(image):
            return draw_boxes(image, [before.region], [""], min_side=0)
        near = [before.nearness().numpy(), after.nearness().numpy()]
        low, high = float(min(np.min(v) for v in near)), float(max(np.max(v) for v in near))
        depth = [framed(depth_image(v, low, high)) for v in near]
        rest = "" if record["rest_factor"] is None else f" · rest x{record['rest_factor']:.3g}"
        return [framed(original), framed(adversarial), *depth], [
            "original", "adversarial (saved PNG)", f"depth before: region {record['region_mean_before']:.4g}",
            f"depth after: region {record['region_mean_after']:.4g}\nmoved x{record['factor']:.3g} "
            f"(asked x{record['factor_asked']:g}){rest}"]

    def summary(self, before, after, record) -> tuple[str, str]:
        return f"{record['region_mean_before']:.4g}", f"{record['region_mean_after']:.4g} (x{record['factor']:.3g})"

    cell = _SamPictures.cell
