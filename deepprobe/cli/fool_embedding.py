"""`deepprobe fool` on embedders: --reference IMG (pull toward it) or --away (push from the original), judged on
the saved PNG by cosine similarity and, with --gallery DIR, by retrieval (the nearest gallery image) and DINO's
k-NN class. Called by cli/fool.py once the model's task is known.

What counts as fooled (`success`, on the re-read PNG):
- toward: the reference is the nearest image among the gallery and the reference (the input's own file left
  out); without a gallery, the adversarial image is nearer the reference than its own original;
- away: the nearest gallery image (the input's own file left out) is not the original's; without a gallery there
  is no verdict (None), only the cosine to the original.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import DeepprobeError
from ..options.fool import DEFAULT_STEPS, Options
from .common import err_console, out_console


def fool_embedder_images(run, bundle, images: list[str], reference: str | None, away: bool,
                         gallery_dir: str | None, opts: Options) -> int:
    import torch

    from ..io import quantize
    from ..techniques.fool_embedding import feature_attack
    from .gallery import load_reference, read_gallery
    from .inputs import batches, image_paths

    if bool(reference) == bool(away):
        raise DeepprobeError("on an embedder give --reference IMG (pull toward its embedding) or --away (push "
                             "from the image's own), one of them")
    if opts.method not in (None, "pgd"):
        raise DeepprobeError(f"--method {opts.method} does not apply to an embedder: its attack is pgd on the "
                             "cosine similarity")
    ref = load_reference(bundle, reference) if reference else None
    paths = image_paths(run, images)
    gallery = read_gallery(run, bundle, gallery_dir, opts.batch_size) if gallery_dir else None
    steps = opts.steps or DEFAULT_STEPS
    judge = _Judge(bundle, gallery, ref, Path(reference) if reference else None)
    table = _table(bundle, away, gallery is not None)
    n_batches = math.ceil(len(paths) / opts.batch_size)
    interrupted = False
    with run.progress() as progress:
        task = progress.add_task("fool (feature pgd)", total=n_batches * steps, info="")
        for b, (chunk_paths, x) in enumerate(batches(run, bundle, paths, opts.batch_size)):
            x = quantize(x)  # the original as an 8-bit image holds it: budgets are then exact on the saved file

            def callback(step, _total, loss, _fwd, base=b * steps, label=f"batch {b + 1}/{n_batches}"):
                progress.update(task, completed=base + step, info=f"{label} · loss {loss:.4g}")
            result = feature_attack(bundle, x, ref, away=away, eps=opts.eps, alpha=opts.alpha or opts.lr,
                                    steps=steps, norm=opts.norm, seed=run.common.seed + b, callback=callback)
            progress.update(task, completed=(b + 1) * steps)
            _save(run, bundle, result, chunk_paths, opts, judge, table)
            if result.stopped in ("interrupted", "nan"):
                err_console.print(f"[yellow]{result.message}[/yellow]")
                interrupted = result.stopped == "interrupted"
                if interrupted:
                    break
    run.summary.update(goal="away" if away else "toward", reference=reference, gallery=gallery_dir,
                       gallery_size=len(gallery) if gallery else None)
    if run.show_progress and table.row_count:
        out_console.print(table)
    code = run.finish()
    return 130 if interrupted else code


class _Judge:
    """Measures a batch of images (originals or re-read PNGs): cosines, nearest gallery image, k-NN class."""

    def __init__(self, bundle, gallery, reference, reference_path: Path | None):
        import torch

        from ..models.embedding import embed

        self.bundle, self.gallery, self.reference_path = bundle, gallery, reference_path
        with torch.no_grad():
            self.ref = embed(bundle, reference).cpu() if reference is not None else None

    def _own(self, path: Path) -> set[int]:
        """Gallery indices holding the input's own file (left out: retrieval never returns the query itself)."""
        target = path.resolve()
        return {i for i, name in enumerate(self.gallery.names) if Path(name).resolve() == target}

    def measure(self, images, paths: list[Path]) -> list[dict]:
        import torch

        from ..models.embedding import embed
        from ..options.classify import Options as Knn
        from ..techniques.knn import knn_predict, nearest

        with torch.no_grad():
            e = embed(self.bundle, images).cpu()
        rows = [{"embedding": e[i]} for i in range(e.shape[0])]
        if self.ref is not None:
            for row, cos in zip(rows, (e @ self.ref.T)[:, 0].tolist()):
                row["cosine_to_reference"] = cos
        if self.gallery is None:
            return rows
        exclude = [self._own(p) for p in paths]
        for row, found in zip(rows, nearest(self.gallery, e, 1, exclude)):
            row["nearest"], row["nearest_cosine"] = found.names[0], found.similarities[0]
            if found.labels:
                row["nearest_class"] = found.labels[0]
        if self.gallery.labels:
            for row, vote in zip(rows, knn_predict(self.gallery, e, Knn.neighbors, Knn.temperature, 1)):
                row["knn_class"] = vote.labels[0]
        return rows

    def reference_wins(self, row: dict) -> bool:
        """The reference is the nearest of the gallery (own file left out) plus the reference itself."""
        if "nearest" not in row:
            return False
        if self.reference_path is not None and Path(row["nearest"]).resolve() == self.reference_path.resolve():
            return True
        return row["cosine_to_reference"] >= row["nearest_cosine"]


def _save(run, bundle, result, paths: list[Path], opts: Options, judge: _Judge, table) -> None:
    """Write each adversarial PNG, re-read them all, measure, then write panels and records."""
    import torch

    from ..figures.fool import feature_panel
    from ..io import safe_stem

    goal = "away" if result.away else f"toward_{safe_stem(judge.reference_path)}"
    saved = []
    for i, (path, record) in enumerate(zip(paths, result.records())):
        record = {"input": str(path), "reference": str(judge.reference_path) if judge.reference_path else None,
                  **record, "loss_curve": [round(v, 5) for v in result.losses]}
        out = run.save_image(result.images[i], f"{safe_stem(path)}_fool_{goal}.png", result=record)
        saved.append((out, record))
    # an independent check on the files as written: a fresh read, the model's own preprocessing
    reread = torch.cat([bundle.load_image(out) for out, _ in saved])
    before = judge.measure(result.original, paths)
    after = judge.measure(reread, paths)
    for i, ((out, record), b, a) in enumerate(zip(saved, before, after)):
        cos_original = float((a["embedding"] * b["embedding"]).sum())
        record.update(checked_on="saved PNG", cosine_to_original=round(cos_original, 6))
        if judge.ref is not None:
            record.update(cosine_before=round(b["cosine_to_reference"], 6),
                          cosine_after=round(a["cosine_to_reference"], 6))
        else:
            record.update(cosine_after=round(cos_original, 6))
        for key in ("nearest", "nearest_cosine", "nearest_class", "knn_class"):
            if key in a:
                record[f"{key}_before"] = _rounded(b[key])
                record[f"{key}_after"] = _rounded(a[key])
        if result.away:
            record["success"] = (a["nearest"] != b["nearest"]) if "nearest" in a else None
        else:
            record["success"] = (judge.reference_wins(a) if "nearest" in a
                                 else a["cosine_to_reference"] > cos_original)
        reference = Path(judge.reference_path).name if judge.reference_path else None
        figure = feature_panel(result.original[i], result.images[i], record, path_name(record), reference,
                               opts.amplify)
        panel_path = run.save_image(figure, f"{Path(out).stem}_panel.png",
                                    result={"input": record["input"], "adversarial": str(out)})
        record.update(output=str(out), panel=str(panel_path))
        run.add_result(record)
        table.add_row(*_row(record))


def _rounded(value):
    return round(value, 6) if isinstance(value, float) else value


def path_name(record: dict) -> str:
    return Path(record["input"]).name


def _table(bundle, away: bool, with_gallery: bool):
    from rich.table import Table

    table = Table(title=f"{bundle.title} · feature PGD {'away' if away else 'toward the reference'} on "
                        f"{bundle.device}")
    columns = ["image", "cos to reference" if not away else "cos to original"]
    columns += ["nearest (saved PNG)"] if with_gallery else []
    columns += ["fooled", "L-inf x255"]
    for column in columns:
        table.add_column(column)
    return table


def _row(record: dict) -> list[str]:
    if record.get("reference"):
        cosine = f"{record['cosine_before']:.3f} → {record['cosine_after']:.3f}"
    else:
        cosine = f"1 → {record['cosine_to_original']:.3f}"
    row = [path_name(record), cosine]
    if "nearest_after" in record:
        row.append(f"{Path(record['nearest_before']).name} → {Path(record['nearest_after']).name}")
    verdict = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "-"}[record["success"]]
    return row + [verdict, f"{record['linf_255']:g}"]
