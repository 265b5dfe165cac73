"""`--point`, `--box` (Segment Anything prompts) and `--region` (depth) options: parsed into tuples, refused
in one line on models that take none.

Coordinates are in the photo's own pixels (x right, y down): SAM and depth estimators keep each photo's size
(their adapters resize to the model's frame inside), and their masks and depth maps come back at that size.
"""
from __future__ import annotations

import typer

from ..errors import DeepprobeError

PANEL = "Segment Anything and depth"


def point_option():
    return typer.Option(None, "--point", help="Segment Anything: a point prompt X,Y in the photo's pixels; repeat "
                                              "for several prompts (one image embedding serves them all).",
                        rich_help_panel=PANEL)


def box_option():
    return typer.Option(None, "--box", help="Segment Anything: a box prompt X0,Y0,X1,Y1 in the photo's pixels; "
                                            "repeat for several prompts.", rich_help_panel=PANEL)


def region_option(what: str):
    return typer.Option(None, "--region", help=f"Depth: the region X0,Y0,X1,Y1 (photo's pixels) {what}.",
                        rich_help_panel=PANEL)


def numbers(text: str, count: int, flag: str, form: str) -> tuple[float, ...]:
    """'12,34' -> (12.0, 34.0); one clear line for anything else."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count or any(v != v or abs(v) == float("inf") for v in values):
        raise DeepprobeError(f"{flag} takes {form} (numbers separated by commas), got {text!r}")
    if count == 4 and not (values[0] < values[2] and values[1] < values[3]):
        raise DeepprobeError(f"{flag} {text} is empty: it needs X0 < X1 and Y0 < Y1")
    return values


def parse_region(text: str | None, flag: str = "--region") -> tuple[float, float, float, float] | None:
    return None if text is None else numbers(text, 4, flag, "X0,Y0,X1,Y1")


def parse_prompts(points: list[str] | None, boxes: list[str] | None) -> list:
    """The Segment Anything prompts of --point and --box, in the photo's pixels."""
    from ..models.sam import Prompt

    prompts = [Prompt.point(*numbers(p, 2, "--point", "X,Y")) for p in points or []]
    prompts += [Prompt.of_box(*numbers(b, 4, "--box", "X0,Y0,X1,Y1")) for b in boxes or []]
    return prompts


def refuse_spatial(bundle, points, boxes, region) -> None:
    """One line when prompts or a region are given to a model that takes none (a typo in --model)."""
    from ..models.tasks import DEPTH, PROMPTABLE_SEGMENTATION, describe_task

    if (points or boxes) and bundle.task != PROMPTABLE_SEGMENTATION:
        raise DeepprobeError(f"--point/--box are Segment Anything prompts; {bundle.spec} is "
                             f"{describe_task(bundle.task)}")
    if region and bundle.task != DEPTH:
        raise DeepprobeError(f"--region applies to depth estimators; {bundle.spec} is {describe_task(bundle.task)}")
