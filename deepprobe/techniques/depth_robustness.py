"""Depth robustness over a data set: the relative-depth error (AbsRel) a bounded attack causes, at each eps.

    res = dp.depth_robustness(probe, "photos/", eps=(2/255, 4/255), depth_maps="photos_depth/")
    res.abs_rel[4/255], res.clean_abs_rel, res.records

Per image: the clean prediction d0 of the 8-bit image; per eps, PGD (random start in the ball, signed steps
of eps/4, `steps` of them, the worst iterate kept) maximizing the prediction's deviation from d0 -- for
relative (inverse-depth) models the scale-and-shift-invariant deviation of MiDaS's loss (each map minus its
median, divided by its mean absolute deviation), for metric models the mean relative change |d - d0| / d0;
the adversarial image is rounded to 8 bits and predicted again, and its AbsRel measured against the reference:
the clean prediction, or the image's ground-truth depth map when `depth_maps` gives one (then the clean
image's own AbsRel is recorded too). AbsRel aligns relative models' predictions by least-squares scale and
shift in inverse depth first (models/depth.py), so an attack that only rescales the map scores 0.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import engine as E
from ..data import Batch, mean_ci95, run_dataset, select
from ..data.runner import Hooks
from ..display import ShowsTable
from ..errors import DeepprobeError
from ..io import quantize
from ..models import ModelBundle
from ..models.depth import abs_rel, depth_net, resize_reference
from ..models.tasks import DEPTH, require_task
from ..options.attacks import eps_key
from ..options.ranges import check_ranges
from ..options.robustness import Options, eps_for
from .fool import on_grid
from .robustness import as_dataset

DEPTH_MAP_SUFFIXES = (".npy", ".png", ".tif", ".tiff")  # ground truth: NAME.npy (float depth) or a 16-bit image
REFERENCES = {True: "ground truth", False: "clean prediction"}
_DEFAULTS = Options()


def read_depth_map(folder: str | Path, image_path: str | Path) -> torch.Tensor:
    """The ground-truth depth of an image: FOLDER/STEM.npy (float array) or FOLDER/STEM.png/.tif (raw values,
    e.g. 16-bit millimetres; any scale works, AbsRel of relative models is scale-free). 0 = no data."""
    stem = Path(image_path).stem
    for suffix in DEPTH_MAP_SUFFIXES:
        path = Path(folder) / f"{stem}{suffix}"
        if path.is_file():
            try:
                values = np.load(path, allow_pickle=False) if suffix == ".npy" else _image_values(path)
            except (OSError, ValueError) as exc:
                raise DeepprobeError(f"cannot read depth map {path}: {exc}") from exc
            values = np.asarray(values, dtype=np.float32)
            values = values[..., 0] if values.ndim == 3 else values
            if values.ndim != 2:
                raise DeepprobeError(f"depth map {path} is not a 2-D array (shape {values.shape})")
            return torch.from_numpy(values)
    raise DeepprobeError(f"no depth map for {Path(image_path).name} in {folder} (looked for {stem}.npy/.png/.tif)")


def _image_values(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img)


def deviation(d: torch.Tensor, d0: torch.Tensor, relative: bool) -> torch.Tensor:
    """(N,) how far predictions d are from d0: scale-and-shift-invariant for relative models (MiDaS), relative
    change for metric ones."""
    if relative:
        def normalized(v):
            flat = v.flatten(1)
            centred = flat - flat.median(1, keepdim=True).values
            return centred / centred.abs().mean(1, keepdim=True).clamp_min(1e-12)
        return (normalized(d) - normalized(d0)).abs().mean(1)
    return ((d - d0).abs() / d0.abs().clamp_min(1e-6)).flatten(1).mean(1)


class DepthBatchAttack:
    """The per-batch function of a depth robustness run (module docstring). With `keep_images`, `last` holds
    the batch's clean images, clean depth and, per eps key, the adversarial images and their depth."""

    def __init__(self, bundle: ModelBundle, eps: Sequence[float], norm: str = _DEFAULTS.norm,
                 steps: int = _DEFAULTS.steps,
                 depth_maps: str | Path | None = None, keep_images: bool = False,
                 callback: Callable[[str, int, int], None] | None = None):
        self.bundle, self.eps, self.norm, self.steps = bundle, [float(e) for e in eps], norm, int(steps)
        self.depth_maps = Path(depth_maps) if depth_maps is not None else None
        self.relative = depth_net(bundle.net).larger_is_nearer
        self.keep_images, self.callback = keep_images, callback  # callback(eps key, step, steps)
        self.last: tuple | None = None

    def __call__(self, batch: Batch) -> list[dict]:
        bundle = self.bundle
        x = quantize(batch.images.to(bundle.device))
        with torch.no_grad():
            d0 = bundle.net(x).float()
        truth = [None] * len(x)
        if self.depth_maps is not None:
            truth = [resize_reference(read_depth_map(self.depth_maps, item.path), d0.shape[-2:])
                     for item in batch.items]
        reference = [t if t is not None else d for t, d in zip(truth, d0)]
        records = [{"reference": REFERENCES[t is not None], "eps": {},
                    "clean_abs_rel": None if t is None else round(abs_rel(d, t, self.relative), 6)}
                   for t, d in zip(truth, d0)]
        kept = {}
        for eps in self.eps:
            key = eps_key(eps)
            adv = self._attack(x, d0, eps, batch.seeds, key) if eps > 0 else x
            with torch.no_grad():
                d = bundle.net(adv).float()
            delta = (adv - x).flatten(1)
            for i, record in enumerate(records):
                record["eps"][key] = {"abs_rel": round(abs_rel(d[i], reference[i], self.relative,
                                                               reference_is_depth=truth[i] is not None), 6),
                                      "linf": round(float(delta[i].abs().max()), 6),
                                      "l2": round(float(delta[i].norm()), 6)}
            kept[key] = (adv.cpu(), d.cpu())
        self.last = (x.cpu(), d0.cpu(), kept) if self.keep_images else None
        return records

    def _attack(self, x: torch.Tensor, d0: torch.Tensor, eps: float, seeds: Sequence[int], key: str) -> torch.Tensor:
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        param = E.Perturbation(x, eps, self.norm, random_start=True, generator=generators)
        objective = E.Objective(lambda f: -deviation(f.logits.float(), d0, self.relative), "depth deviation",
                                needs_logits=True)

        def report(step, total, _loss, _fwd):
            if self.callback is not None:
                self.callback(key, step, total)
        res = E.optimize(self.bundle, param, objective, steps=self.steps, lr=eps / 4, optimizer="sign",
                         callback=report, check_every=1)
        if res.stopped == "interrupted":
            raise KeyboardInterrupt
        return on_grid(res.images, x, eps, self.norm)


class DepthTally:
    """The summary, accumulated one record at a time: mean AbsRel (95% interval) per eps."""

    def __init__(self, eps: Sequence[float]):
        self.eps = [float(e) for e in eps]
        self.keys = [eps_key(e) for e in self.eps]
        self.values: dict[str, list[float]] = {k: [] for k in self.keys}
        self.clean: list[float] = []
        self.references: set[str] = set()

    def add(self, record: dict) -> None:
        self.references.add(record["reference"])
        if record.get("clean_abs_rel") is not None:
            self.clean.append(record["clean_abs_rel"])
        for key in self.keys:
            self.values[key].append(record["eps"][key]["abs_rel"])

    def summary(self) -> dict:
        def stats(values):
            mean, (low, high), n = mean_ci95(values)
            return {"mean": round(mean, 6), "ci95": [round(low, 6), round(high, 6)], "n": n} if n else None

        reference = " and ".join(sorted(self.references)) or "clean prediction"
        n = len(next(iter(self.values.values()), []))
        return {"n": n, "reference": reference,
                "measure": f"AbsRel of the prediction under attack against the {reference} (relative models "
                           "aligned by scale and shift in inverse depth)",
                "abs_rel": {k: stats(self.values[k]) for k in self.keys},
                "clean_abs_rel": stats(self.clean),
                "per_eps": {k: {"eps": e} for k, e in zip(self.keys, self.eps)}}


@dataclass
class DepthRobustnessResult(ShowsTable):
    """Mean AbsRel per eps (keys: the eps values as given), against ground truth or the clean prediction. In
    Jupyter: the terminal's table with the CLI's AbsRel-against-eps plot under it."""

    n: int
    abs_rel: dict[float, float | None]
    clean_abs_rel: float | None
    records: list[dict]
    summary: dict
    skipped: list[dict] = field(default_factory=list)

    def _title(self) -> str:
        from ..figures.robustness import depth_robustness_title

        (model_title,) = self._needs("model_title")
        return depth_robustness_title(model_title, self.summary)

    def figure(self):
        """Mean AbsRel against eps (the CLI's robustness_depth.png)."""
        from ..figures.robustness import abs_rel_plot

        if not self.n:
            raise DeepprobeError("no image was attacked: nothing to plot")
        return abs_rel_plot(self.summary, self._context_get("norm", _DEFAULTS.norm), title=self._title())

    def table_html(self) -> str:
        from ..figures.robustness import depth_robustness_html

        return depth_robustness_html(self.summary, self._context_get("norm", _DEFAULTS.norm),
                                     self._title() if self._context_get("model_title") else "depth robustness")


def depth_robustness(bundle: ModelBundle, data: Any, *, eps: float | Sequence[float] | None = None,
                     norm: str = _DEFAULTS.norm, steps: int = _DEFAULTS.steps, depth_maps: str | Path | None = None,
                     batch_size: int = 1, seed: int = 0, limit: int | None = None, sample: int | None = None,
                     workers: int = 0, callback: Callable[[int, int], None] | None = None) -> DepthRobustnessResult:
    """AbsRel of `bundle`'s depth under attack at each eps over `data` (folder, glob, list of paths or a
    (N,3,H,W) tensor), against `depth_maps` ground truth (a folder of STEM.npy/.png) or the clean prediction.
    `batch_size` 1 lets images of any size through (a batch needs one size)."""
    check_ranges("robustness", {"eps": eps, "norm": norm, "steps": steps, "batch_size": batch_size,
                                "limit": limit, "sample": sample, "workers": workers})
    require_task(bundle, "depth_robustness", DEPTH)
    if depth_maps is not None and isinstance(data, torch.Tensor):
        raise DeepprobeError("depth_maps go with image files (matched by name); with tensors there are no names")
    budgets = eps_for(norm, list(eps) if isinstance(eps, (list, tuple)) else eps)
    dataset = select(as_dataset(data, None, bundle), limit=limit, sample=sample, seed=seed)
    done = [0]

    def progress(k: int) -> None:
        done[0] += k
        if callback:
            callback(done[0], len(dataset.items))

    outcome = run_dataset(dataset, DepthBatchAttack(bundle, budgets, norm, steps, depth_maps), batch_size=batch_size,
                          seed=seed, preprocess=bundle.preprocess, workers=workers, hooks=Hooks(progress=progress))
    if not outcome.count and outcome.complete:
        raise DeepprobeError(f"no image of the data could be read ({len(outcome.skipped)} skipped)")
    tally = DepthTally(budgets)
    records = list(outcome.records())
    for record in records:
        tally.add(record)
    summary = tally.summary()
    by_key = dict(zip(tally.keys, budgets))
    return DepthRobustnessResult(
        n=summary["n"], abs_rel={by_key[k]: (v or {}).get("mean") for k, v in summary["abs_rel"].items()},
        clean_abs_rel=(summary["clean_abs_rel"] or {}).get("mean"), records=records, summary=summary,
        skipped=outcome.skipped)._attach(model_title=bundle.title, norm=norm)
