"""`deepprobe age`: estimate the age of every face, or edit one face towards a target age."""
from __future__ import annotations

import os
from pathlib import Path

import typer

from ..errors import DeepprobeError
from ..options.age import Options
from . import app
from .common import command, err_console, opt, out_console


@command(app, "age", uses_model=False)
def age_cmd(run, images: list[str] = typer.Argument(..., help="Photos (files, folders or globs)."),
            target: str = opt(Options, "target", help="Edit the face towards this age (e.g. 80)."),
            steps_grid: str = opt(Options, "steps_grid", help="Several targets, e.g. 30,50,70,90: a trajectory panel."),
            face: int = opt(Options, "face", help="Which face to edit; 0 is the largest (see the table)."),
            faces: str = opt(Options, "faces", help="Folder of face photos: edit in their PCA basis (cached)."),
            components: int = opt(Options, "components", help="PCA components kept from --faces."),
            steps: int = opt(Options, "steps", help="Adam steps of the first round."),
            lr: str = opt(Options, "lr", help="Adam step size on the basis coefficients."),
            l2_weight: str = opt(Options, "l2_weight", help="Weight of the distance to the original (identity)."),
            tv_weight: str = opt(Options, "tv_weight", help="Weight of the edit's total variation (smoothness)."),
            rounds: int = opt(Options, "rounds", help="Optimize / save / re-measure rounds at most."),
            min_score: str = opt(Options, "min_score", help="Face-detector score to count as a face."),
            device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|mps (auto picks CUDA when present).",
                                       rich_help_panel="Model")):
    """Estimate the age of each face; with --target, make a face look older or younger.

    Age network: dlib's CC0 age model. Ages in the JSON are measured on the saved PNG, re-read from disk."""
    from ..models.age import load_age_model
    from .inputs import image_paths

    opts = run.options
    targets = _targets(opts)
    paths = image_paths(run, images)
    with run.status("loading the age model"):
        bundle = load_age_model(device)
    run.summary.update(model=bundle.spec, device=str(bundle.device))
    if not targets:
        _estimate(run, bundle, paths, opts)
    else:
        for path in paths:
            _edit(run, bundle, path, targets, opts, single=len(paths) == 1)
            if run.interrupted:  # Ctrl-C: this photo's best edit is saved; the rest are left
                break


def _targets(opts: Options) -> list[float]:
    if opts.steps_grid:
        try:
            return [float(v) for v in opts.steps_grid.replace(" ", "").split(",") if v]
        except ValueError:
            raise DeepprobeError(f"--steps-grid must be ages separated by commas, got {opts.steps_grid!r}") from None
    return [] if opts.target is None else [opts.target]


def _no_face(run, path: Path, single: bool) -> None:
    if single:
        raise DeepprobeError(f"no face found in {path}")
    run.fail(str(path), f"no face found in {path}")


def _estimate(run, bundle, paths: list[Path], opts: Options) -> None:
    from rich.table import Table

    from ..errors import ImageError
    from ..io import read_image
    from ..techniques.age import estimate_age

    table = Table(title=f"estimated age ({bundle.title})")
    for column in ("image", "face", "age", "box (l,t,r,b)", "detector score"):
        table.add_column(column)
    for path in paths:
        try:
            found = estimate_age(read_image(path), bundle, opts.min_score)
        except ImageError as exc:
            run.fail(str(path), str(exc))
            continue
        if not found:
            _no_face(run, path, len(paths) == 1)
            continue
        for est in found:
            run.add_result({"input": str(path), **est.as_dict()})
            table.add_row(path.name, str(est.index), f"{est.age:.1f}", ",".join(map(str, est.box)), f"{est.score:.2f}")
    if run.show_progress and table.row_count:
        out_console.print(table)


def _edit(run, bundle, path: Path, targets: list[float], opts: Options, single: bool) -> None:
    from ..figures.age import age_panel
    from ..io import read_image, safe_stem
    from ..techniques.age import age, measure_ages, options_dict
    from ..techniques.face import face_crop, find_faces
    from ..techniques.face_basis import cached_pca_basis

    photo = read_image(path)
    if not find_faces(photo, opts.min_score):
        return _no_face(run, path, single)
    basis, limit, basis_info = None, None, {"basis": "smooth (DCT)"}
    if opts.faces:
        with run.status(f"building the PCA face basis of {opts.faces}"):
            basis, count, cache = cached_pca_basis(opts.faces, opts.components, _cache_dir(), opts.min_score)
        limit = 3.0  # standard deviations of the face set
        basis_info = {"basis": "pca", "faces_folder": opts.faces, "pca_faces": count,
                      "pca_components": int(basis.shape[0]), "pca_cache": str(cache)}
    stem = safe_stem(path)
    kwargs = dict(options_dict(opts), seed=run.common.seed)
    with run.progress() as progress:
        task = progress.add_task(f"age {path.name}", total=None, info="")

        def callback(step, total, loss, ages):
            shown = " ".join(f"{a:.1f}" for a in ages.tolist())
            progress.update(task, completed=step, total=total, info=f"loss {loss:.3g} · age {shown}")
        result = age(photo, targets, bundle, basis=basis, limit=limit, source=str(path), callback=callback, **kwargs)
        progress.update(task, completed=result.steps, total=result.steps)
    run.interrupted = result.stopped == "interrupted"
    if result.message:
        err_console.print(f"[yellow]{result.message}[/yellow]")

    before = result.before
    crop = face_crop(photo, result.face)
    rereads, afters, rows = [], [], []
    for i, goal in enumerate(targets):
        sidecar = {"input": str(path), "face": result.face_index, "target": goal, **basis_info}
        saved = run.save_image(result.photos[i:i + 1], f"{stem}_age{goal:g}.png", result=sidecar)
        reread = read_image(saved)  # the file a user gets, measured afresh: detection, alignment, prediction
        after = measure_ages(bundle, reread, result.face, opts.min_score)[0]
        sidecar.update(age_before=round(before, 2), age_after=None if after is None else round(after, 2),
                       reached=after is not None and abs(after - goal) <= 5.0, steps=result.steps,
                       rounds=result.rounds, stopped=result.stopped, loss_curve=result.losses)
        run.add_result({**{k: v for k, v in sidecar.items() if k != "loss_curve"}, "output": str(saved)})
        rereads.append(reread[0])
        afters.append(after)
        rows.append((f"{goal:g}", f"{before:.1f}", "-" if after is None else f"{after:.1f}", saved.name))
    name = f"{stem}_age{targets[0]:g}_panel.png" if len(targets) == 1 else f"{stem}_age_grid_panel.png"
    figure = age_panel(photo, rereads, crop, before, targets, afters, path.name, result.face_index)
    panel_path = run.save_image(figure, name,
                                result={"input": str(path), "targets": targets, "panel": True})
    for entry in run.results[-len(targets):]:
        entry["panel"] = str(panel_path)
    if run.show_progress:
        from rich.table import Table

        table = Table(title=f"{path.name}: face {result.face_index}")
        for column in ("target", "age before", "age after (saved file)", "output"):
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        out_console.print(table)
        out_console.print(f"panel: {panel_path}")


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "deepprobe"
