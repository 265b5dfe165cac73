"""Adversarial examples on the one engine: PGD, FGSM, Szegedy's L-BFGS and Carlini-Wagner L2.

Every method works in [0,1] pixel space (normalization lives inside `bundle.net`), on whole batches, on
the bundle's device, and judges success the way a user will see it: on the 8-bit image that gets saved,
by an independent forward pass. The returned images already lie on the 8-bit grid, so saving them as
PNG changes nothing.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import engine as E
from ..display import Shows
from ..errors import DeepprobeError
from ..io import quantize
from ..models import ModelBundle
from ..options.fool import (
    DEFAULT_CONFIDENCE,
    DEFAULT_METHOD,
    DEFAULT_STEPS,
    METHODS,
    NORMS,
    Options,
    alpha_for,
    c_for,
    confidence_for,
    eps_for,
    lr_for,
)
from ..options.ranges import check_ranges
from .fool_params import BoxPixels, TanhImage

Callback = Callable[[int, int, float, "E.Forward"], None]
ClassSpec = int | str | torch.Tensor | None


@dataclass
class AttackResult(Shows):
    """Adversarial batch (on the 8-bit grid) and, per image, how the attack went. In Jupyter it shows the panel
    `deepprobe fool` writes for each image; `.show()`, `.save("panel.png")`."""

    images: torch.Tensor  # (N,3,H,W) in [0,1], exactly what a saved PNG holds
    original: torch.Tensor  # (N,3,H,W) the images attacked
    success: torch.Tensor  # (N,) bool: classified as the target (untargeted: not as the label), judged on `images`
    target: torch.Tensor | None  # (N,) target classes; None for an untargeted attack
    original_class: torch.Tensor  # (N,) class of the original (the label an untargeted attack moves away from)
    original_prob: torch.Tensor
    final_class: torch.Tensor  # (N,) class of `images`
    final_prob: torch.Tensor
    linf: torch.Tensor  # (N,) L-inf of images - original, [0,1] units
    l2: torch.Tensor  # (N,) L2 of images - original, [0,1] units
    steps: torch.Tensor  # (N,) optimizer steps spent on each image
    method: str
    confidence: float = 0.0  # targeted: the target probability asked for on `images` (0: just fooled)
    target_prob: torch.Tensor | None = None  # (N,) probability of the target on `images` (targeted only)
    losses: list[float] = field(default_factory=list)  # mean loss per step, all rounds in order
    stopped: str = "done"  # done | early | interrupted | nan (as the engine reports)
    message: str | None = None

    @property
    def perturbation(self) -> torch.Tensor:
        return self.images - self.original

    @property
    def confidence_reached(self) -> torch.Tensor | None:
        """(N,) bool: fooled with the target at `confidence` or more on `images`; None when untargeted."""
        if self.target is None:
            return None
        return self.success & (self.target_prob >= self.confidence)

    def records(self, bundle: ModelBundle) -> list[dict]:
        """Per-image JSON-ready summaries with class names."""
        rows = []
        for i in range(self.images.shape[0]):
            targeted = self.target is not None
            row = {
                "method": self.method,
                "targeted": targeted,
                "target": bundle.class_name(int(self.target[i])) if targeted else None,
                "original_class": bundle.class_name(int(self.original_class[i])),
                "original_probability": round(float(self.original_prob[i]), 6),
                "final_class": bundle.class_name(int(self.final_class[i])),
                "final_probability": round(float(self.final_prob[i]), 6),
                "success": bool(self.success[i]),
                "confidence": self.confidence if targeted else None,
                "target_probability": round(float(self.target_prob[i]), 6) if targeted else None,
                "confidence_reached": bool(self.confidence_reached[i]) if targeted else None,
                "linf": float(self.linf[i]), "linf_255": round(float(self.linf[i]) * 255, 3),
                "l2": float(self.l2[i]), "l2_255": round(float(self.l2[i]) * 255, 3),
                "steps": int(self.steps[i]),
                "stopped": self.stopped,
            }
            rows.append(row)
        return rows

    def figure(self):
        """original | perturbation | adversarial for each image, stacked (the CLI's panels; measured in memory)."""
        from ..display import stack
        from ..figures.fool import fool_panel

        (bundle,) = self._needs("bundle")
        return stack([fool_panel(self.original[i], self.images[i], record, f"image {i}")
                      for i, record in enumerate(self.records(bundle))])


def attack(bundle: ModelBundle, x: torch.Tensor, target: ClassSpec = None, *, labels: ClassSpec = None,
           method: str = DEFAULT_METHOD, eps: float | None = Options.eps, alpha: float | None = Options.alpha,
           steps: int = DEFAULT_STEPS, norm: str = Options.norm, seed: int | Sequence[int] = 0,
           lr: float | None = Options.lr, kappa: float = Options.kappa,
           confidence: float | None = DEFAULT_CONFIDENCE, rounds: int = Options.rounds,
           search_steps: int = Options.search_steps, c: float | None = Options.c,
           callback: Callback | None = None) -> AttackResult:
    """Make `x` (N,3,H,W in [0,1]) classified as `target` (class name, index or (N,) tensor), or, without a
    target, as anything but `labels` (default: the model's own prediction on `x`).

    pgd/fgsm keep the change inside an `norm` ball of radius `eps`; szegedy/cw look for the smallest change
    that works (search over the constant c). A targeted attack goes on until the 8-bit image gives the
    target at least `confidence` (0.9, as on the command line; 0: just on top, past the logit margin
    `kappa`), within the same budget; `result.confidence_reached` says where it got there (fgsm takes its
    one step regardless). `callback(step, total, loss, fwd)` reports progress.
    `seed`: one int for the batch, or one per image (then an image's random start does not depend on its batch).
    """
    if getattr(bundle, "task", "classification") in ("detection", "segmentation"):  # CLIP: logits over prompts
        raise DeepprobeError(f"attack() fools classifiers; {bundle.spec} is a {bundle.task} model: use "
                             "deepprobe.fool_detector / deepprobe.fool_segmenter")
    if method not in METHODS:
        raise DeepprobeError(f"unknown attack method {method!r} (choose from {', '.join(METHODS)})")
    if norm not in NORMS:
        raise DeepprobeError(f"unknown norm {norm!r} (choose from {', '.join(NORMS)})")
    check_ranges("fool", locals())
    confidence = confidence_for(confidence)
    x = x.detach().float().to(bundle.device)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    gen = _generators(seed, x.shape[0])
    with eval_mode(bundle.net):
        probs0 = bundle.predict(x)
        p0, c0 = probs0.max(1)
        goal = _Goal(_classes(bundle, target, x.shape[0], x.device),
                     _classes(bundle, labels, x.shape[0], x.device) if labels is not None else c0, confidence)
        eps_value = eps_for(norm, eps)
        progress = _Progress(callback)
        if method in ("pgd", "fgsm"):
            adv, used, run = _pgd(bundle, x, goal, norm=norm, eps=eps_value, random_start=method == "pgd",
                                  alpha=eps_value if method == "fgsm" else alpha_for(eps_value, alpha, lr),
                                  steps=1 if method == "fgsm" else steps, kappa=kappa,
                                  rounds=0 if method == "fgsm" else rounds, gen=gen, progress=progress)
        elif method == "szegedy":
            adv, used, run = _szegedy(bundle, x, goal, steps=steps, lr=lr_for(method, lr), c=c_for(method, c),
                                      search_steps=search_steps, progress=progress)
        else:
            adv, used, run = _cw(bundle, x, goal, steps=steps, lr=lr_for(method, lr), c=c_for(method, c),
                                 kappa=kappa, search_steps=search_steps, progress=progress)
        _, probs = _judge(bundle, adv, goal)
    pf, cf = probs.max(1)
    delta = (adv - x).flatten(1)
    target_prob = probs.gather(1, goal.target[:, None])[:, 0].cpu() if goal.targeted else None
    return AttackResult(images=adv, original=x, success=goal.fooled(probs).cpu(),
                        target=goal.target.cpu() if goal.targeted else None,
                        original_class=c0.cpu(), original_prob=p0.cpu(), final_class=cf.cpu(), final_prob=pf.cpu(),
                        linf=delta.abs().amax(1).cpu(), l2=delta.norm(dim=1).cpu(), steps=used.cpu(), method=method,
                        confidence=goal.confidence if goal.targeted else 0.0, target_prob=target_prob,
                        losses=run.losses, stopped=run.stopped, message=run.message)._attach(bundle=bundle)


# ----- what "fooled" means --------------------------------------------------------------------------------
@dataclass
class _Goal:
    """Targeted (reach `target`, with probability `confidence` when > 0) or untargeted (leave `label`), per
    image, with its losses and margin."""

    target: torch.Tensor | None
    label: torch.Tensor
    confidence: float = 0.0

    @property
    def targeted(self) -> bool:
        return self.target is not None

    @property
    def confident(self) -> bool:
        return self.targeted and self.confidence > 0

    def subset(self, index: torch.Tensor) -> _Goal:
        return _Goal(self.target[index] if self.targeted else None, self.label[index], self.confidence)

    def margin(self, logits: torch.Tensor) -> torch.Tensor:
        """(N,) logit margin, > 0 exactly when the goal is met: target on top (and, with a confidence, its
        log-odds past those of the confidence: p(target) > confidence) / label not on top."""
        cls = self.target if self.targeted else self.label
        own = logits.gather(1, cls[:, None])[:, 0]
        rest = logits.masked_fill(F.one_hot(cls, logits.shape[1]).bool(), float("-inf"))
        margin = own - rest.amax(1) if self.targeted else rest.amax(1) - own
        if self.confident:
            # own - logsumexp(rest) = log(p / (1 - p)), the target's log-odds
            odds = own - rest.logsumexp(1) - math.log(self.confidence / (1 - self.confidence))
            margin = torch.minimum(margin, odds)
        return margin

    def fooled(self, probs: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the target on top / the label not on top."""
        pred = probs.argmax(1)
        return pred == self.target if self.targeted else pred != self.label

    def score(self, probs: torch.Tensor) -> torch.Tensor:
        """(N,) how near the goal an image is (higher is nearer): p(target), or 1 - p(label)."""
        if self.targeted:
            return probs.gather(1, self.target[:, None])[:, 0]
        return 1 - probs.gather(1, self.label[:, None])[:, 0]

    def reached(self, probs: torch.Tensor) -> torch.Tensor:
        """(N,) bool: fooled, and with the target at `confidence` or more."""
        ok = self.fooled(probs)
        if self.confident:
            ok &= probs.gather(1, self.target[:, None])[:, 0] >= self.confidence
        return ok

    def cross_entropy(self) -> E.Objective:
        """PGD's loss: CE to the target, or minus CE of the label (untargeted maximizes it)."""
        return E.cross_entropy(self.target) if self.targeted else -E.cross_entropy(self.label)

    def bounded_loss(self) -> E.Objective:
        """A loss bounded below (for penalized forms): CE to the target, or -log(1 - p(label))."""
        if self.targeted:
            return E.cross_entropy(self.target)
        label = self.label

        def away(f: E.Forward) -> torch.Tensor:
            p = torch.softmax(f.logits.float(), 1).gather(1, label[:, None])[:, 0]
            return -torch.log1p(-p.clamp(max=1 - 1e-6))
        return E.Objective(away, "-log(1-p[label])", needs_logits=True)

    def hinge(self, kappa: float) -> E.Objective:
        """Carlini-Wagner f6: max(-margin, -kappa)."""
        return E.Objective(lambda f: (-self.margin(f.logits)).clamp(min=-kappa), f"f6(k={kappa:g})", needs_logits=True)


def _classes(bundle: ModelBundle, spec: ClassSpec, n: int, device: torch.device) -> torch.Tensor | None:
    if spec is None:
        return None
    if isinstance(spec, torch.Tensor):
        t = spec.to(device=device, dtype=torch.long).flatten()
        if t.numel() == 1:
            t = t.expand(n)
        if t.numel() != n:
            raise DeepprobeError(f"got {t.numel()} classes for {n} images")
        count = bundle.num_classes
        if count is not None and bool(((t < 0) | (t >= count)).any()):
            raise DeepprobeError(f"class indices must lie in 0..{count - 1}")
        return t.clone()
    return torch.full((n,), bundle.class_index(spec), dtype=torch.long, device=device)


@torch.no_grad()
def _judge(bundle: ModelBundle, images: torch.Tensor, goal: _Goal) -> tuple[torch.Tensor, torch.Tensor]:
    """(goal reached?, probabilities) of images as saved, by a fresh forward pass."""
    probs = bundle.predict(images)
    return goal.reached(probs), probs


def on_grid(adv: torch.Tensor, x: torch.Tensor, eps: float | None = None, norm: str = "linf") -> torch.Tensor:
    """Round to 8 bits so that the saved image keeps the budget: L-inf rounds into the ball; for L2 the
    change is shrunk until its rounded version fits (rounding alone can add ~5% to an L2 norm)."""
    q = quantize(adv)
    if eps is None:
        return q
    if norm == "linf":
        lo = torch.ceil(((x - eps) * 255 - 1e-4).clamp(0, 255)) / 255
        hi = torch.floor(((x + eps) * 255 + 1e-4).clamp(0, 255)) / 255
        return torch.minimum(torch.maximum(q, lo), hi)
    delta, scale = adv - x, torch.ones(x.shape[0], 1, 1, 1, device=x.device)
    for _ in range(10):
        l2 = (q - x).flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        over = l2 > eps
        if not bool(over.any()):
            return q
        scale = torch.where(over, scale * eps / l2 * 0.995, scale)
        q = quantize(x + delta * scale)
    # Last resort (an original far off the 8-bit grid): round every pixel towards the original.
    grid_x, scaled = (x * 255).round(), adv.clamp(0, 1) * 255
    toward = torch.where(scaled > grid_x, torch.maximum(scaled.floor(), grid_x), torch.minimum(scaled.ceil(), grid_x))
    return torch.where(over, toward / 255, q)


# ----- bookkeeping shared by the methods -----------------------------------------------------------------
@dataclass
class _Run:
    losses: list[float] = field(default_factory=list)
    stopped: str = "done"
    message: str | None = None

    def add(self, res: E.OptimResult) -> bool:
        """Record one engine run; False when the attack must stop (Ctrl-C or NaN)."""
        self.losses += res.losses
        if res.stopped in ("interrupted", "nan"):
            self.stopped, self.message = res.stopped, res.message
            return False
        return True


class _Progress:
    """Turns the engine's per-run step count into one running count over all runs of an attack."""

    def __init__(self, callback: Callback | None):
        self.callback, self.offset, self.total, self.step = callback, 0, 1, 0

    def engine(self, total: int) -> Callable:
        self.total = max(self.total, total)

        def report(step: int, _steps: int, loss: float, fwd) -> None:
            self.step = step
            if self.callback is not None:
                self.callback(min(self.offset + step, self.total), self.total, loss, fwd)
        return report

    def done(self, steps: int) -> None:
        self.offset += steps


# ----- PGD / FGSM ------------------------------------------------------------------------------------------
def _pgd(bundle, x, goal: _Goal, *, norm, eps, alpha, steps, random_start, kappa, rounds, gen, progress):
    """Madry et al.: random start in the ball, signed (L-inf) or normalized (L2) steps, project, clamp.

    Runs in short chunks and drops each image from the batch once it clears its goal by the margin `kappa`
    (targeted with a confidence: the target's log-odds past those of the confidence; signed steps keep no
    optimizer state, so this equals one long run, minus the work on finished images). Images whose 8-bit
    version does not reach the goal get up to `rounds` more runs from where they are, aiming at a doubled
    margin each time.
    """
    n = x.shape[0]
    run = _Run()
    used = torch.zeros(n, dtype=torch.long, device=x.device)
    adv, current = x.clone(), x.clone()
    best_loss = torch.full((n,), math.inf, device=x.device)
    todo = torch.arange(n, device=x.device)
    progress.total = steps
    first = True
    for attempt in range(rounds + 1):
        margin = kappa * 2 ** attempt
        left = steps if attempt == 0 else max(steps // 2, 5)
        while len(todo) and left > 0:
            sub = goal.subset(todo)
            param = E.Perturbation(x[todo], eps, norm, random_start=random_start and first,
                                   generator=gen if isinstance(gen, torch.Generator) else [gen[i] for i in todo.tolist()])
            if not first:  # go on from where the last chunk left these images
                with torch.no_grad():
                    param.delta.copy_(current[todo] - x[todo])
                    param.project_()
            first = False
            first_ok = torch.zeros(len(todo), dtype=torch.long, device=x.device)

            def stop_when(fwd, sub=sub, margin=margin, first_ok=first_ok):
                ok = sub.margin(fwd.logits.detach().float()) > margin
                first_ok.copy_(torch.where(ok & (first_ok == 0), progress.step, first_ok))
                return ok
            res = E.optimize(bundle, param, sub.cross_entropy(), steps=min(left, _chunk(bundle)), lr=alpha,
                             optimizer="sign", stop_when=stop_when if random_start else None,
                             callback=progress.engine(steps), check_every=1)
            progress.done(res.steps)
            left -= res.steps
            finished = first_ok > 0
            used[todo] += torch.where(finished, first_ok, res.steps)
            # Keep the iterate that cleared the margin, else the lowest loss so far (what Ctrl-C leaves);
            # the search itself goes on from the last step. FGSM's answer is its one step.
            loss = res.best_loss.to(x.device)
            keep = finished | (loss < best_loss[todo])
            best_loss[todo] = torch.where(keep, loss, best_loss[todo])
            adv[todo] = torch.where(keep.view(-1, 1, 1, 1), res.images, adv[todo]) if random_start else res.final
            current[todo] = res.final
            if not run.add(res):
                break
            todo = todo[~finished]
        adv_q = on_grid(adv, x, eps, norm)
        if run.stopped != "done" or attempt == rounds or not random_start:
            break
        ok, _ = _judge(bundle, adv_q, goal)
        if bool(ok.all()):
            break
        todo = torch.nonzero(~ok).flatten()
        current = torch.where(ok.view(-1, 1, 1, 1), current, adv_q)
        best_loss[todo] = math.inf
    return adv_q, used, run


def _generators(seed: int | Sequence[int], n: int) -> torch.Generator | list[torch.Generator]:
    if isinstance(seed, (int, float)):
        return torch.Generator().manual_seed(int(seed))
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise DeepprobeError(f"got {len(seeds)} seeds for {n} images")
    return [torch.Generator().manual_seed(s) for s in seeds]


def _chunk(bundle: ModelBundle) -> int:
    # Steps between checks for finished images: on the CPU a check costs nothing and a finished image
    # dropped early saves a whole forward/backward; on accelerators avoid a host sync every step.
    return 1 if bundle.device.type == "cpu" else 10


# ----- Szegedy et al. 2014: box-constrained L-BFGS, line search over c ------------------------------------
def _szegedy(bundle, x, goal: _Goal, *, steps, lr, c, search_steps, progress):
    """min_r  c*||r||^2 + loss(x + r)  with x + r in [0,1], for the largest c (smallest r) that still fools.

    c is searched per image: x10 while it works and no upper bound is known, /10 while it fails and no
    lower bound is known, geometric bisection once both are known. Success is judged on the 8-bit image.
    """
    loss = goal.bounded_loss()

    def objective(cs: torch.Tensor) -> E.Objective:
        penalty = E.Objective(lambda f: cs * (f.images - x).flatten(1).pow(2).sum(1), "c*|r|^2")
        return loss + penalty

    # Here a larger c means a smaller perturbation, so success raises the lower bound of c.
    return _search(bundle, x, goal, lambda: BoxPixels(x), objective, "lbfgs", steps, lr, c, search_steps,
                   progress, larger_c_is_bolder=False)


# ----- Carlini & Wagner 2017, L2 ---------------------------------------------------------------------------
def _cw(bundle, x, goal: _Goal, *, steps, lr, c, kappa, search_steps, progress):
    """min_w ||x' - x||^2 + c * f6(x'),  x' = (tanh(w) + 1) / 2, Adam, binary search over c."""
    hinge = goal.hinge(kappa)

    def objective(cs: torch.Tensor) -> E.Objective:
        distance = E.Objective(lambda f: (f.images - x).flatten(1).pow(2).sum(1), "|r|^2")
        return distance + E.Objective(lambda f: cs * hinge(f), "c*f6", needs_logits=True)

    return _search(bundle, x, goal, lambda: TanhImage(x), objective, "adam", steps, lr, c, search_steps,
                   progress, larger_c_is_bolder=True)


def _search(bundle, x, goal, make_param, objective, optimizer, steps, lr, c, search_steps, progress,
            larger_c_is_bolder: bool):
    """Per-image search over the constant c, keeping the smallest L2 change whose 8-bit image reaches the goal
    (with a confidence: the target at that probability); where none does, the try closest to it."""
    n = x.shape[0]
    run = _Run()
    cs = torch.full((n,), float(c), device=x.device)
    lo = torch.zeros(n, device=x.device)  # bounds on c between "fails" and "works"
    hi = torch.full((n,), math.inf, device=x.device)
    best = x.clone()
    best_l2 = torch.full((n,), math.inf, device=x.device)
    closest, closest_score = x.clone(), torch.full((n,), -math.inf, device=x.device)
    used = torch.zeros(n, dtype=torch.long, device=x.device)
    progress.total = steps * search_steps
    for _ in range(search_steps):
        res = E.optimize(bundle, make_param(), objective(cs), steps=steps, lr=lr, optimizer=optimizer,
                         callback=progress.engine(steps * search_steps), check_every=_chunk(bundle))
        progress.done(res.steps)
        used += res.steps
        candidates = [on_grid(res.images, x, None), on_grid(res.final, x, None)]
        works = torch.zeros(n, dtype=torch.bool, device=x.device)
        for cand in candidates:
            ok, probs = _judge(bundle, cand, goal)
            l2 = (cand - x).flatten(1).norm(dim=1)
            better = ok & (l2 < best_l2)
            best = torch.where(better.view(-1, 1, 1, 1), cand, best)
            best_l2 = torch.where(better, l2, best_l2)
            works |= ok
            score = goal.score(probs)
            nearer = score > closest_score
            closest = torch.where(nearer.view(-1, 1, 1, 1), cand, closest)
            closest_score = torch.where(nearer, score, closest_score)
        never = torch.isinf(best_l2)  # the goal never reached: show the try that came closest, not the original
        best = torch.where(never.view(-1, 1, 1, 1), closest, best)
        if not run.add(res):
            break
        timid_side = works if larger_c_is_bolder else ~works  # c must shrink (cw: works; szegedy: fails)
        hi = torch.where(timid_side, torch.minimum(hi, cs), hi)
        lo = torch.where(timid_side, lo, torch.maximum(lo, cs))
        both = torch.isfinite(hi) & (lo > 0)
        cs = torch.where(both, (lo * hi).sqrt(), torch.where(torch.isfinite(hi), hi / 10, lo * 10))
    return best, used, run


@contextlib.contextmanager
def eval_mode(net: torch.nn.Module):
    """Attack the model as deployed (eval mode), and give it back as it was."""
    was_training = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was_training)


def options_dict(opts: Options) -> dict:
    """Options -> keyword arguments of `attack` (everything but the CLI-only, detector- and depth-only fields)."""
    values = {k: v for k, v in dataclasses.asdict(opts).items()
              if k not in ("batch_size", "amplify", "min_score", "factor")}
    values["method"] = DEFAULT_METHOD if values["method"] is None else values["method"]
    values["steps"] = DEFAULT_STEPS if values["steps"] is None else values["steps"]
    return values
