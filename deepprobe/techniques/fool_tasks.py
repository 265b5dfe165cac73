"""Fooling detectors and segmenters: boxes that vanish or change class, pixels that change class.

Dense Adversary Generation (DAG, Xie et al. 2017) treats every candidate box (every pixel) as a target of its
own: each step lowers, summed over the targets the model still gets "right", the score of the class to remove
minus the score of the class wanted (background to hide a box), and moves the image by 0.5/255 * r / ||r||_inf;
it stops once no target is left (inside an L-inf `eps` if one is given). `method="pgd"` is the bounded
alternative (TOG, Chow et al. 2020): signed steps inside an L-inf ball. Both run on the one engine
(`deepprobe.engine.optimize`).

Relabelling, as in DAG, targets only the candidates on the boxes to relabel (the clean image's source boxes):
their box (`CandidateSpec.boxes`, read anew each forward, since proposals and DETR's boxes move) overlaps one by
IoU >= ON_SOURCE for the source class to be pushed down, by IoU >= LIFT_ON for the target to be lifted. Lifting
every candidate instead grew target boxes all over the image and none on the object (measured on the tiny
detector); a detector whose spec has no boxes still gets that behaviour.

A box counts as there when its score is at or above `min_score`; the attack pushes candidates below half of it,
so rounding to 8 bits cannot bring them back. Success is judged like for classifiers: on the 8-bit image, by an
independent forward pass; images that fail get up to `rounds` more runs with a doubled margin.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import engine as E
from ..display import Shows
from ..errors import DeepprobeError
from ..models import ModelBundle
from ..models.candidates import candidate_spec
from ..models.outputs import IOU_MATCH, Detections, background_index, detect, segment
from ..models.tasks import DETECTION, SEGMENTATION, require_task
from ..options.fool import DAG_STEP, DAG_STEPS, DEFAULT_TASK_METHOD, TASK_METHODS, TOG_ALPHA, TOG_EPS, TOG_STEPS
from ..options.fool import Options
from .fool import on_grid

Callback = Callable[[int, int, float, "E.Forward"], None]
ClassList = str | int | list | tuple | None
MARGIN = 0.5  # candidates are pushed below MARGIN * min_score (halved again in each extra round)
LIFT_TO = 0.8  # relabelling: candidates on their way to the target are lifted to this score
# relabelling: the source class is pushed down on candidates whose box overlaps a box to relabel by ON_SOURCE
# (DAG's 0.1 for proposals: loose proposals on the object carry its class too, and would keep a source box)...
ON_SOURCE = 0.1
# ...and the target lifted on those overlapping it by LIFT_ON: success needs a target box at IoU >= IOU_MATCH,
# and lifting loose ones grows target boxes beside the object (tiny detector, 16 scenes at alpha 4/255, eps 0.5:
# LIFT_ON 0.3 met the goal on 14, 0.5 on 16, 0.7 on 5; ON_SOURCE 0.1 or 0.3: 16)
LIFT_ON = IOU_MATCH
SEGMENT_SUCCESS = 0.99  # a segmenter is fooled when this share of the source pixels reads as the target


@dataclass
class TaskAttackResult(Shows):
    """Adversarial batch (8-bit grid), what the model found before and after, and whether the goal was met. In
    Jupyter: `deepprobe fool`'s before | perturbation | after panel per image (boxes, class colours, SAM's mask or
    depth, by the task)."""

    images: torch.Tensor
    original: torch.Tensor
    success: torch.Tensor  # (N,) bool, judged on `images` by a fresh forward pass
    share: torch.Tensor  # (N,) boxes hidden/relabelled, or source pixels now the target, as a share
    before: list  # Detections or Segmentation per image, on the original
    after: list  # the same on `images`
    goal: str  # e.g. "vanish person", "relabel all -> cat", "square -> disk"
    method: str
    steps: torch.Tensor
    losses: list[float] = field(default_factory=list)
    stopped: str = "done"
    message: str | None = None
    # images -> (success, share, after, notes): the same verdict on other images (e.g. the saved PNGs, read back)
    judge: Callable | None = field(default=None, repr=False)
    notes: list[dict] | None = None  # per image, more of the verdict (relabel: "spurious" target boxes)

    @property
    def perturbation(self) -> torch.Tensor:
        return self.images - self.original

    def records(self) -> list[dict]:
        rows = []
        delta = self.perturbation.flatten(1)
        for i in range(self.images.shape[0]):
            rows.append({"method": self.method, "goal": self.goal, "success": bool(self.success[i]),
                         "share": round(float(self.share[i]), 6), "before": self.before[i].as_dict(),
                         "after": self.after[i].as_dict(),
                         "linf_255": round(float(delta[i].abs().max()) * 255, 3),
                         "l2": float(delta[i].norm()), "steps": int(self.steps[i]), "stopped": self.stopped,
                         **(self.notes[i] if self.notes else {})})
        return rows

    def figure(self):
        from ..display import stack
        from ..figures.tasks import attack_panel, pictures_for

        pictures = pictures_for(self.before[0])
        return stack([attack_panel(pictures, self.original[i], self.images[i], self.before[i], self.after[i], record,
                                   f"image {i}") for i, record in enumerate(self.records())])


class DagPerturbation(E.Perturbation):
    """Xie et al.'s step direction: the gradient scaled so that its largest entry is 1, per image."""

    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        return grad / grad.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)


# ------------------------------------------------------------------------------------------ goals
def _class_list(bundle, spec: ClassList) -> list[int] | None:
    """None / True / "all" -> None (every class); a name, an index or a list of them -> indices."""
    if spec is None or spec is True or (isinstance(spec, str) and spec.lower() == "all"):
        return None
    items = [spec] if isinstance(spec, (str, int)) else list(spec)
    if any(isinstance(s, str) and s.lower() == "all" for s in items):
        return None
    return list(dict.fromkeys(bundle.class_index(s) for s in items))


def _describe(bundle, classes: list[int] | None) -> str:
    return "all" if classes is None else ", ".join(bundle.class_name(c) for c in classes)


@dataclass
class _BoxGoal:
    """Hide the boxes of `classes` (target None), or relabel them as `target`; None classes = every class."""

    classes: list[int] | None
    target: int | None
    background: int | None

    def columns(self, count: int, device) -> torch.Tensor:
        cols = range(count) if self.classes is None else self.classes
        drop = {self.background, self.target}
        return torch.tensor([c for c in cols if c not in drop], dtype=torch.long, device=device)

    def loss(self, probs: torch.Tensor, tau: float, on: torch.Tensor | None = None) -> torch.Tensor:
        """DAG's sum over the candidates still holding a class to remove: its score minus the wanted one's
        (log-probabilities on softmax heads, logits on sigmoid heads).

        Relabelling also lifts the target score of candidates below LIFT_TO: a box pushed out of the source
        class must land in the target, not in the background. As in DAG, both act only on the candidates on
        the boxes to relabel: `on` is each candidate's best IoU with one ((K,), `on_sources`); the source is
        pushed at IoU >= ON_SOURCE, the target lifted at IoU >= LIFT_ON. Without boxes (`on` None): on every
        candidate whose target score is between tau / 5 and LIFT_TO (target boxes may then appear anywhere)."""
        p = probs.clamp(1e-6, 1 - 1e-6)
        cols = self.columns(p.shape[1], p.device)
        have = p[:, cols]
        active = have > tau
        zero = 0.0 * probs.sum()
        if self.target is None:
            gap = have.log() - p[:, self.background].log()[:, None] if self.background is not None \
                else torch.logit(have)
            return (gap * active).sum() + zero
        pt = p[:, self.target]
        gap = have.log() - pt.log()[:, None] if self.background is not None \
            else torch.logit(have) - torch.logit(pt)[:, None]
        if on is None:
            lift = (pt > tau / 5) & (pt < LIFT_TO)
        else:
            lift, active = (on >= LIFT_ON) & (pt < LIFT_TO), active & (on >= ON_SOURCE)[:, None]
        return (gap * active).sum() - (torch.logit(pt) * lift).sum() + zero

    def left(self, probs: torch.Tensor, tau: float) -> bool:
        cols = self.columns(probs.shape[1], probs.device)
        return bool((probs[:, cols] > tau).any())

    def judge(self, before: Detections, after: Detections) -> tuple[bool, float, dict]:
        """(met?, share of the original boxes hidden / relabelled, notes) from two sets of kept detections.

        Relabelling is met when every box to relabel has a target box on it (IoU >= IOU_MATCH), no box of a
        source class is left, and no target box appeared away from them (`spurious`: a new target box that
        overlaps no box to relabel by ON_SOURCE; notes["spurious"] lists them)."""
        wanted = before.of(self.classes) if self.target is None else self.sources(before)
        remaining = after.of(self.classes) if self.target is None else self.sources(after)
        notes = {} if self.target is None else {"spurious": self._spurious(before, wanted, after).records()}
        if not len(wanted):
            return not len(remaining) and not notes.get("spurious"), 1.0, notes
        if self.target is None:
            done = [not kept for kept in wanted.still_in(remaining)]
        else:
            relabelled = after.of([self.target])
            done = [bool(len(relabelled)) and bool((_iou(b[None], relabelled.boxes)[0] >= IOU_MATCH).any())
                    for b in wanted.boxes]
        return all(done) and not len(remaining) and not notes.get("spurious"), sum(done) / len(done), notes

    def _spurious(self, before: Detections, wanted: Detections, after: Detections) -> Detections:
        """Target boxes in `after` that were not there `before` and lie off every box to relabel."""
        new = after.of([self.target])
        old = before.of([self.target])
        keep = torch.ones(len(new), dtype=torch.bool)
        for boxes, overlap in ((old.boxes, IOU_MATCH), (wanted.boxes, ON_SOURCE)):
            if len(new) and len(boxes):
                keep &= _iou(new.boxes, boxes).amax(1) < overlap
        return new.select(keep)

    def on_sources(self, boxes: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """(K,) the candidates' (boxes (K,4)) best IoU with a box to relabel (sources (S,4))."""
        if not len(sources):
            return torch.zeros(len(boxes), device=boxes.device)
        return _iou(boxes, sources.to(boxes.device)).amax(1)

    def sources(self, found: Detections) -> Detections:
        """The boxes to relabel: of a source class, not already the target."""
        keep = found.of(self.classes)
        return keep.select(keep.labels != self.target)


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from torchvision.ops import box_iou

    return box_iou(a.float(), b.float())


def _box_goal(bundle, vanish: ClassList, target, source: ClassList) -> tuple[_BoxGoal, str]:
    bg = candidate_spec(bundle).background
    if (vanish is None) == (target is None):
        raise DeepprobeError("say what to do with the boxes: vanish (a class, several, or 'all') or target "
                             "(the class to relabel them as), not both")
    if target is not None:
        t = bundle.class_index(target)
        classes = _class_list(bundle, source)
        return _BoxGoal(classes, t, bg), f"relabel {_describe(bundle, classes)} -> {bundle.class_name(t)}"
    classes = _class_list(bundle, vanish)
    return _BoxGoal(classes, None, bg), f"vanish {_describe(bundle, classes)}"


# ------------------------------------------------------------------------------------------ detectors
def fool_detector(bundle: ModelBundle, x: torch.Tensor, *, vanish: ClassList = None, target=None,
                  source: ClassList = None, method: str = DEFAULT_TASK_METHOD, eps: float | None = None,
                  alpha: float | None = None, steps: int | None = None, min_score: float = Options.min_score,
                  rounds: int = 2, seed: int = 0, callback: Callback | None = None) -> TaskAttackResult:
    """Make a detector's boxes disappear (`vanish`: a class, a list, or "all") or read as `target` (boxes of
    `source` classes, default all), on a (N,3,H,W) batch in [0,1]."""
    require_task(bundle, "fool_detector", DETECTION)
    goal, text = _box_goal(bundle, vanish, target, source)
    spec = candidate_spec(bundle)
    x = as_batch(bundle, x)
    before = detect(bundle, x, min_score)
    # relabelling acts on the candidates on the boxes to relabel (fixed: the clean image's), per forward
    sources = [goal.sources(b).boxes for b in before] if goal.target is not None and spec.boxes else None

    def probs(fwd) -> list[torch.Tensor]:
        return spec.read(fwd.activations)

    def on(fwd, todo) -> list:
        if sources is None:
            return [None] * len(fwd.images)
        boxes = spec.boxes(fwd.activations, tuple(x.shape[-2:]))
        return [goal.on_sources(b, sources[i]) for b, i in zip(boxes, todo.tolist())]

    def objective(tau: float, todo) -> E.Objective:
        return E.Objective(lambda f: torch.stack([goal.loss(p, tau, o) for p, o in zip(probs(f), on(f, todo))]),
                           f"dag({text})", layers=spec.layers)

    def judge(images: torch.Tensor, todo=None):
        after = detect(bundle, images, min_score)
        verdict = [goal.judge(before[i], a) for i, a in zip(range(len(before)) if todo is None else todo.tolist(),
                                                            after)]
        return (torch.tensor([v[0] for v in verdict]), torch.tensor([v[1] for v in verdict]), after,
                [v[2] for v in verdict])

    def done(tau: float, todo) -> Callable:
        if goal.target is not None:  # relabelled means "a target box on each source box": ask the detector
            return lambda f: judge(f.images.detach(), todo)[0]
        return lambda f: torch.tensor([not goal.left(p.detach(), tau) for p in probs(f)])

    margins = lambda attempt: min_score * MARGIN / 2 ** attempt  # noqa: E731
    return attack_rounds(bundle, x, before, text, objective, done, judge, margins, method=method, eps=eps,
                         alpha=alpha, steps=steps or DAG_STEPS[DETECTION] if method == "dag" else steps,
                         rounds=rounds, seed=seed, callback=callback)


# ------------------------------------------------------------------------------------------ segmenters
def fool_segmenter(bundle: ModelBundle, x: torch.Tensor, *, vanish: ClassList = None, target=None,
                   source: ClassList = None, method: str = DEFAULT_TASK_METHOD, eps: float | None = None,
                   alpha: float | None = None, steps: int | None = None, kappa: float = Options.kappa,
                   rounds: int = 2, seed: int = 0, callback: Callback | None = None) -> TaskAttackResult:
    """Turn the pixels of `source` classes (default: every class but the target and background) into
    `target`; `vanish` (a class, a list or "all") turns them into background instead."""
    require_task(bundle, "fool_segmenter", SEGMENTATION)
    if (vanish is None) == (target is None):
        raise DeepprobeError("say what the pixels should become: target (a class) or vanish (turn a class, "
                             "several, or 'all' into background), not both")
    x = as_batch(bundle, x)
    bg = background_index(bundle)
    if target is None:
        if bg is None:
            raise DeepprobeError("vanish needs a background class; this model's labels name none: use --target")
        t, classes = bg, _class_list(bundle, vanish)
    else:
        t, classes = bundle.class_index(target), _class_list(bundle, source)
    before = segment(bundle, x)
    masks = torch.stack([s.mask for s in before]).to(x.device)
    if classes is None:
        pixels = (masks != t) & (masks != bg) if bg is not None else masks != t
    else:
        pixels = torch.isin(masks, torch.tensor(classes, device=x.device)) & (masks != t)
    text = ("vanish " if target is None else "") + _describe(bundle, classes) + f" -> {bundle.class_name(t)}"

    def gap(logits: torch.Tensor, todo) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,H,W) margin of the target over the best other class, and the pixels asked to change."""
        own = logits[:, t]
        others = logits.masked_fill(F.one_hot(torch.tensor(t, device=logits.device), logits.shape[1])
                                    .bool().view(1, -1, 1, 1), float("-inf")).amax(1)
        return own - others, pixels[todo]

    def objective(k: float, todo) -> E.Objective:
        def loss(f):
            margin, region = gap(f.logits.float(), todo)
            return (-margin * (region & (margin < k))).sum(dim=(1, 2)) + 0.0 * f.logits.flatten(1).sum(1)
        return E.Objective(loss, f"dag({text})", needs_logits=True)

    def done(k: float, todo) -> Callable:
        def check(f):
            margin, region = gap(f.logits.detach().float(), todo)
            return ~(region & (margin < k)).flatten(1).any(1)
        return check

    def judge(images: torch.Tensor):
        after = segment(bundle, images)
        share = torch.tensor([float(((a.mask.to(x.device) == t) & p).sum()) / max(1, int(p.sum()))
                              if p.any() else 1.0 for a, p in zip(after, pixels)])
        return share >= SEGMENT_SUCCESS, share, after, None

    return attack_rounds(bundle, x, before, text, objective, done, judge, lambda attempt: kappa * 2 ** attempt,
                         method=method, eps=eps, alpha=alpha,
                         steps=steps or DAG_STEPS[SEGMENTATION] if method == "dag" else steps, rounds=rounds,
                         seed=seed, callback=callback)


def fool_task(bundle: ModelBundle, x: torch.Tensor, **kwargs) -> TaskAttackResult:
    """`fool_detector` or `fool_segmenter`, by the bundle's task."""
    if bundle.task == DETECTION:
        kwargs.pop("kappa", None)
        return fool_detector(bundle, x, **kwargs)
    kwargs.pop("min_score", None)
    return fool_segmenter(bundle, x, **kwargs)


# ------------------------------------------------------------------------------------------ the shared loop
def as_batch(bundle, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().float().to(bundle.device)
    return x.unsqueeze(0) if x.dim() == 3 else x


def attack_rounds(bundle, x, before, text, objective, done, judge, margin, *, method, eps, alpha, steps, rounds,
                  seed, callback) -> TaskAttackResult:
    """Rounds of engine runs: DAG (unbounded, L-inf-normalized steps) or PGD (signed steps in an eps ball);
    images whose 8-bit version misses the goal go on from there with a doubled margin. The task-agnostic loop:
    `objective(margin, todo)`, `done(margin, todo)` and `judge(images)` say what the goal means (detectors and
    segmenters here, Segment Anything in fool_prompt.py, depth in fool_depth.py)."""
    if method not in TASK_METHODS:
        raise DeepprobeError(f"unknown method {method!r} for detectors and segmenters (choose from "
                             f"{', '.join(TASK_METHODS)})")
    dag = method == "dag"
    bound = float(eps) if eps is not None else (None if dag else TOG_EPS)  # DAG is unbounded unless eps is given
    step = float(alpha if alpha is not None else (DAG_STEP if dag else TOG_ALPHA))
    steps = steps or TOG_STEPS
    gen = torch.Generator().manual_seed(int(seed))
    n = x.shape[0]
    current = x.clone()
    used = torch.zeros(n, dtype=torch.long)
    losses: list[float] = []
    stopped, message, offset = "done", None, 0
    todo = torch.arange(n, device=x.device)
    for attempt in range(rounds + 1):
        budget = steps if attempt == 0 else max(steps // 2, 5)
        param = (DagPerturbation if dag else E.Perturbation)(x[todo], 1.0 if bound is None else bound, "linf",
                                                             random_start=not dag and attempt == 0, generator=gen)
        if attempt:
            with torch.no_grad():
                param.delta.copy_(current[todo] - x[todo])
                param.project_()
        first = torch.zeros(len(todo), dtype=torch.long)
        check = done(margin(attempt), todo)

        def stop_when(fwd, check=check, first=first):
            ok = check(fwd).cpu()
            first.copy_(torch.where(ok & (first == 0), stop_when.step, first))
            return ok
        stop_when.step = 0

        def report(step, _total, loss, fwd, base=offset):
            stop_when.step = step
            if callback is not None:
                callback(base + step, base + budget, loss, fwd)
        res = E.optimize(bundle, param, objective(margin(attempt), todo), steps=budget, lr=step, optimizer="sign",
                         stop_when=stop_when, callback=report, check_every=1, keep_best=False)
        offset += res.steps
        losses += res.losses
        used[todo.cpu()] += torch.where(first > 0, first, torch.full_like(first, res.steps))
        current[todo] = res.images
        if res.stopped in ("interrupted", "nan"):
            stopped, message = res.stopped, res.message
        adv = on_grid(current, x, bound)
        ok, share, after, notes = judge(adv)
        if stopped != "done" or bool(ok.all()) or attempt == rounds:
            break
        current = torch.where(ok.to(x.device).view(-1, 1, 1, 1), current, adv)
        todo = torch.nonzero(~ok).flatten().to(x.device)
    return TaskAttackResult(images=adv, original=x, success=ok, share=share, before=before, after=after,
                            goal=text, method=method, steps=used, losses=losses, stopped=stopped, message=message,
                            judge=judge, notes=notes)
