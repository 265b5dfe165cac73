"""`deepprobe classify` and `explain` on Segment Anything: SAM's three masks per prompt with their predicted IoU
scores, and maps of what drives the chosen mask. Called by cli/classify.py and cli/explain.py once the model's
task is known. One image at a time (each keeps its size); each image's embedding serves all its prompts."""
from __future__ import annotations

from ..errors import DeepprobeError
from .common import out_console

NEED_PROMPT = ("Segment Anything needs a prompt: --point X,Y or --box X0,Y0,X1,Y1 (in the photo's pixels; "
               "repeat for several)")


def prompts_or_refuse(points, boxes) -> list:
    from .regions import parse_prompts

    prompts = parse_prompts(points, boxes)
    if not prompts:
        raise DeepprobeError(NEED_PROMPT)
    return prompts


def classify_prompts(run, bundle, images: list[str], points, boxes, alpha: float) -> None:
    """Per image and prompt: a panel (input with the prompt | each candidate mask with its IoU score), the
    masks as NAME_sam_K_masks.npy ((3,H,W) bool) and a table row per candidate."""
    import numpy as np
    from rich.table import Table

    from ..figures.foundation import prompt_masks_figure
    from ..io import name_slug, safe_stem
    from ..models.sam_masks import segment_prompts
    from .inputs import batches, image_paths

    prompts = prompts_or_refuse(points, boxes)
    paths = image_paths(run, images)
    table = Table(title=f"{bundle.title} on {bundle.device}")
    for column in ("image", "prompt", "mask", "predicted IoU", "area", "box (x0, y0, x1, y1)"):
        table.add_column(column)
    for chunk, x in batches(run, bundle, paths, 1):
        path, photo = chunk[0], x[0].detach().cpu()
        try:
            found = segment_prompts(bundle, x, prompts)[0]  # one embedding, every prompt
        except DeepprobeError as exc:  # a prompt outside this photo: the others go on
            run.fail(str(path), str(exc))
            continue
        for k, masks in enumerate(found):
            rows = masks.records()
            name = f"{safe_stem(path)}_sam_{k}_{name_slug(masks.prompt.describe())}"
            record = {"input": str(path), "prompt_index": k, **masks.as_dict(), "prompt_coords": masks.prompt.as_dict()}
            out = run.save_image(prompt_masks_figure(photo, masks, path.name, alpha), f"{name}.png", result=record)
            npy = run.save_file(lambda p, m=masks.masks.numpy(): np.save(p, m), f"{name}_masks.npy", sidecar=False)
            run.add_result({**record, "output": str(out), "masks_file": str(npy)})
            for r in rows:
                table.add_row(path.name if r["candidate"] == 0 else "", masks.prompt.describe() if r["candidate"] == 0
                              else "", f"{r['candidate']}{' *' if r['chosen'] else ''}", f"{r['iou_score']:.3f}",
                              f"{r['area']:.1%}", "-" if r["box"] is None else ", ".join(map(str, r["box"])),
                              end_section=r["candidate"] == len(rows) - 1)
    if run.show_progress and table.row_count:
        out_console.print(table)
        out_console.print("* the mask SAM chooses (its highest predicted IoU)")


def explain_prompts(run, bundle, images: list[str], opts, points, boxes) -> None:
    """Per image, prompt and method: the map of what drives the chosen mask (its logits summed over it)."""
    import torch

    from ..explain import explain
    from ..explain.sam_depth import adapter_layer, check_method
    from ..models.sam_masks import segment_prompts
    from ..options.explain import method_kwargs
    from ..render_sam_depth import draw_mask, draw_prompt
    from .explain_tasks import MapWriter
    from .inputs import batches, image_paths

    prompts = prompts_or_refuse(points, boxes)
    for method in opts.method:
        check_method(bundle, method, opts.target or None)
    paths = image_paths(run, images)
    writer = MapWriter.with_table(run, bundle, opts, ("prompt", "IoU score"))
    with run.progress() as progress:
        task = progress.add_task("explain", total=len(paths) * len(prompts), info="")
        for chunk, x in batches(run, bundle, paths, 1):
            writer.pick_layer(x, adapter_layer)
            photo = x[0].detach().cpu()
            try:
                found = segment_prompts(bundle, x, prompts)[0]
            except DeepprobeError as exc:
                run.fail(str(chunk[0]), str(exc))
                continue
            for k, masks in enumerate(found):
                progress.update(task, info=f"{chunk[0].name} · {masks.prompt.describe()}")
                maps = {m: explain(bundle, x, m, prompt=masks.prompt, **method_kwargs(opts, m, writer.cam_layer))[0]
                        for m in opts.method}
                score = float(masks.scores[masks.chosen])
                record = {"input": str(chunk[0]), "class": masks.prompt.describe(), "prompt_index": k,
                          "chosen": masks.chosen, "iou_score": round(score, 6),
                          "area": round(float(masks.mask.float().mean()), 6), "empty": not bool(masks.mask.any())}
                caption = f"mask {masks.chosen} of {masks.prompt.describe()} (IoU score {score:.2f})"
                writer.write(chunk[0], f"sam_{k}", photo, draw_mask(photo, masks.mask, masks.prompt, opts.alpha),
                              {m: torch.as_tensor(v) for m, v in maps.items()}, record,
                              lambda pic, p=masks.prompt: draw_prompt(pic, p),
                              caption, f"{score:.3f}")
                progress.advance(task)
    writer.finish()
