"""`deepprobe style`: Gatys style transfer, judged by a second network."""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import DeepprobeError
from ..options.style import CONTENT_LAYER, INITS, OPTIMIZERS, STYLE_LAYERS, Options
from . import app
from .common import command, err_console, opt, out_console


@command(app, "style")
def style_cmd(run, content: str = typer.Argument(..., metavar="CONTENT", help="The photo to repaint."),
              styles: list[str] = typer.Argument(..., metavar="STYLE...", help="One or more style images."),
              style_weight: str = opt(Options, "style_weight", help="Weight of the style (Gram) loss."),
              content_weight: str = opt(Options, "content_weight", help="Weight of the content loss."),
              tv: str = opt(Options, "tv", help="Weight of the total-variation prior (smoothness)."),
              size: int = opt(Options, "size", help="Longest side of the result in pixels."),
              init: str = opt(Options, "init", help="Start from: content | noise."),
              optimizer: str = opt(Options, "optimizer", help="lbfgs (fastest) | adam (memory-light)."),
              steps: int = opt(Options, "steps", help="Optimizer steps."),
              lr: str = opt(Options, "lr", help="Step size (default 1.0 for lbfgs, 0.02 for adam)."),
              style_blend: str = opt(Options, "style_blend", help="Weights of several styles, e.g. 0.7,0.3 "
                                                                  "(normalized; default equal)."),
              preserve_colors: bool = opt(Options, "preserve_colors", "--preserve-colors/--no-preserve-colors",
                                          help="Transfer luminance only; keep the content's colours."),
              style_layers: list[str] = opt(Options, "style_layers", "--style-layer",
                                            help="Layer with a Gram loss; repeat for several; default "
                                                 f"{', '.join(STYLE_LAYERS)}."),
              content_layer: str = opt(Options, "content_layer", help="Layer whose features keep the content."),
              smooth: bool = opt(Options, "smooth", "--smooth/--no-smooth",
                                 help="Optimize through a smooth ReLU6 so gradients do not die."),
              measure_model: str = opt(Options, "measure_model", help="Network that judges the result (default "
                                                                      "efficientnet_lite2, or lite0 when optimizing "
                                                                      "with lite2; none: skip).")):
    """Paint the style image(s) over CONTENT (Gatys et al.).

    Writes CONTENT_style_STYLE.png, a panel
    (content | style(s) | result) and JSON sidecars. A different network then measures the result: its Gram
    distance to the style against the content photo's, and its content distance against the style image's."""
    from ..errors import ImageError
    from ..io import read_image
    from ..options.style import measure_model_for

    opts = run.options
    _check(opts, len(styles))
    bundle = run.bundle()
    opts.style_layers = run.layers_for(opts.style_layers, STYLE_LAYERS, deepest_only=False)
    opts.content_layer = run.layers_for([opts.content_layer], (CONTENT_LAYER,))[0]
    for layer in [*opts.style_layers, opts.content_layer]:
        bundle.layer(layer)  # unknown layers fail here, with suggestions
    images = []
    for path in [content, *styles]:
        try:
            images.append(read_image(path))
        except ImageError as exc:
            raise DeepprobeError(str(exc)) from None
    judge_spec = measure_model_for(bundle.spec, opts.measure_model)
    judge = None
    if judge_spec is not None:
        from ..models import load_model

        with run.status(f"loading {judge_spec} (the judge)"):
            judge = load_model(judge_spec, None, run.common.device)
    return _transfer(run, bundle, judge, Path(content), [Path(s) for s in styles], images[0], images[1:], opts)


def _check(opts: Options, n_styles: int) -> None:
    """Option values a user can get wrong, reported before any model is loaded."""
    from ..techniques.style import blend_weights

    if opts.init not in INITS:
        raise DeepprobeError(f"--init must be one of {', '.join(INITS)}, got {opts.init!r}")
    if opts.optimizer not in OPTIMIZERS:
        raise DeepprobeError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {opts.optimizer!r}")
    if opts.size < 32:
        raise DeepprobeError(f"--size must be at least 32 pixels, got {opts.size}")
    if min(opts.style_weight, opts.content_weight, opts.tv) < 0:
        raise DeepprobeError("--style-weight, --content-weight and --tv must be 0 or more")
    if not opts.style_layers:
        raise DeepprobeError("give at least one --style-layer")
    blend_weights(n_styles, opts.style_blend)


def _transfer(run, bundle, judge, content_path: Path, style_paths: list[Path], content, styles, opts: Options) -> int:
    from ..figures.synthesis import style_panel
    from ..io import safe_stem
    from ..techniques.style import chroma_difference, measure, style
    from .progress import engine_callback

    with run.progress() as progress:
        task = progress.add_task(f"style ({opts.optimizer})", total=opts.steps, info="")
        result = style(bundle, content, styles, style_layers=opts.style_layers, content_layer=opts.content_layer,
                       style_weight=opts.style_weight, content_weight=opts.content_weight, tv=opts.tv,
                       size=opts.size, init=opts.init, optimizer=opts.optimizer, steps=opts.steps, lr=opts.lr,
                       style_blend=opts.style_blend, preserve_colors=opts.preserve_colors, smooth=opts.smooth,
                       seed=run.common.seed, callback=engine_callback(progress, task, bundle))
        progress.update(task, completed=result.steps)
    if result.message:
        err_console.print(f"[yellow]{result.message}[/yellow]")
    h, w = result.images.shape[-2:]
    record = {
        "content": str(content_path), "styles": [str(p) for p in style_paths], "style_blend": result.blend,
        "size": [int(h), int(w)], "optimizer": opts.optimizer, "init": opts.init, "steps": result.steps,
        "stopped": result.stopped, "preserve_colors": opts.preserve_colors,
        "style_layers": list(opts.style_layers), "content_layer": opts.content_layer,
    }
    if opts.preserve_colors:
        record["content_chroma_difference"] = round(chroma_difference(result.images, result.content), 5)
    if judge is not None:
        scores = measure(judge, result.images, result.content, result.styles, result.blend)
        record.update(measured_by=judge.spec, **{k: round(v, 5) for k, v in scores.items()})
    name = f"{safe_stem(content_path)}_style_" + "+".join(safe_stem(p) for p in style_paths)
    out = run.save_image(result.images, f"{name}.png",
                         result={**record, "loss_curve": [round(v, 6) for v in result.losses]})
    title = (f"style transfer · {bundle.title} · {opts.optimizer} {result.steps} steps"
             + (" · colours kept" if opts.preserve_colors else ""))
    figure = style_panel(result.content, result.styles, result.images, content_path.name,
                         [p.name for p in style_paths], result.blend, record, title)
    panel_path = run.save_image(figure, f"{name}_panel.png",
                                result={"content": str(content_path), "result": str(out), "panel": True})
    record.update(output=str(out), panel=str(panel_path))
    run.add_result(record)
    run.summary.update({k: record[k] for k in ("style_ratio", "content_ratio", "measured_by") if k in record})
    if run.show_progress:
        _show(record)
    code = run.finish()
    return 130 if result.stopped == "interrupted" else code


def _show(r: dict) -> None:
    out_console.print(f"result: {r['output']}  panel: {r['panel']}")
    if "style_ratio" in r:
        out_console.print(f"measured by {r['measured_by']}: Gram distance to the style {r['gram_distance_result']:.3f} "
                          f"(content photo: {r['gram_distance_content']:.3f}, x{r['style_ratio']:.2f}); "
                          f"content distance {r['content_distance_result']:.3f} "
                          f"(style image: {r['content_distance_style']:.3f}, x{r['content_ratio']:.2f})")
