"""Fooling images grown from noise (Nguyen, Yosinski & Clune, CVPR 2015).

Three ways to grow an unrecognizable image the model labels as a target with high confidence:
- `evolve`: evolutionary search over a direct pixel encoding (a low-resolution RGB grid, upsampled),
  an elitist (mu + lambda) search with per-gene Gaussian mutation and uniform crossover;
- `cppn`: evolutionary search over CPPNs (indirect encoding, see techniques/cppn.py), which gives the
  regular, patterned look of the paper;
- `gradient`: gradient descent on the cross-entropy to the target, from uniform noise, on the engine.
Fitness is the target probability of the 8-bit image. Populations of every target are evaluated
together as batches on the model's device. Pure evolution rarely reaches 99% on an ImageNet model in
a CPU budget (the paper ran thousands of generations), so if it stops short, the best evolved image is
finished with a few signed-gradient steps on a small L-inf perturbation (it keeps its look); the result
says so (`refined_with_gradient`, `refine_linf`). Confidence is always re-measured on the quantized
image by an independent forward pass.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import engine as E
from ..display import Shows
from ..errors import DeepprobeError
from ..io import quantize
from ..models import ModelBundle
from ..models.bundle import require_classifier
from ..options.noise import METHODS, Options, steps_for
from ..options.ranges import check_ranges
from . import cppn

_D = Options()
# callback(generation_or_step, total, best_confidence_per_target, phase) with phase "evolve" | "refine" | "gradient"
Callback = Callable[[int, int, list[float], str], None]
EVAL_BATCH = 32


@dataclass
class NoiseResult(Shows):
    """One image per target (on the 8-bit grid) and how the search went. In Jupyter: `fool --from-noise`'s
    captioned grid."""

    images: torch.Tensor  # (T,3,H,W) in [0,1], exactly what a saved PNG holds
    targets: list[int]
    confidence: torch.Tensor  # (T,) target probability of `images` (independent forward pass)
    predicted: torch.Tensor  # (T,) top class of `images`
    threshold: float
    method: str
    steps: list[int]  # generations (evolve/cppn) or gradient steps (gradient) used per target
    refine_steps: list[int]  # gradient steps spent refining an evolved genome (0: none)
    history: list[list[float]] = field(default_factory=list)  # best fitness per generation/step, per target
    evaluations: int = 0  # images scored by the model during the search
    stopped: str = "done"  # done | interrupted
    details: list[dict[str, Any]] = field(default_factory=list)  # per target: genome description etc.

    @property
    def success(self) -> torch.Tensor:
        return (self.confidence >= self.threshold) & (self.predicted == torch.tensor(self.targets))

    @property
    def refined_with_gradient(self) -> list[bool]:
        return [s > 0 for s in self.refine_steps]

    def records(self, bundle: ModelBundle) -> list[dict]:
        rows = []
        for i, t in enumerate(self.targets):
            rows.append({"method": self.method, "target": bundle.class_name(t), "target_index": t,
                         "confidence": round(float(self.confidence[i]), 6),
                         "predicted": bundle.class_name(int(self.predicted[i])),
                         "success": bool(self.success[i]), "steps": self.steps[i],
                         "refined_with_gradient": self.refined_with_gradient[i],
                         "refine_steps": self.refine_steps[i], **self.details[i]})
        return rows

    def figure(self):
        from ..figures.fool import noise_grid

        (bundle,) = self._needs("bundle")
        return noise_grid(self.images, self.records(bundle), self.method, any(self.refined_with_gradient))


def fool_from_noise(probe: ModelBundle, targets: Sequence[int | str] | int | str, method: str = _D.method, *,
                    steps: int | None = _D.steps, population: int = _D.population, elite: int = _D.elite,
                    resolution: int = _D.resolution, mutation_rate: float = _D.mutation_rate,
                    mutation_scale: float = _D.mutation_scale, lr: float = _D.lr, seed: int = 0,
                    confidence: float = _D.confidence, refine_steps: int = _D.refine_steps,
                    refine_eps: float = _D.refine_eps, callback: Callback | None = None) -> NoiseResult:
    """Grow one image per target that the model labels as that target with >= `confidence`.

    steps: generations for evolve/cppn, gradient steps for gradient (None: the method's default).
    """
    if method not in METHODS:
        raise DeepprobeError(f"--method for --from-noise must be one of {', '.join(METHODS)}, got {method!r}")
    check_ranges("noise", locals())
    require_classifier(probe, "fool --from-noise")
    if isinstance(targets, (int, str)):
        targets = [targets]
    if not targets:
        raise DeepprobeError("give at least one target class (--target)")
    index = [probe.class_index(t) for t in targets]
    steps = steps_for(method, steps)
    h, w = probe.input_size or (224, 224)
    if method == "gradient":
        return _gradient(probe, index, steps, lr, seed, confidence, (h, w), callback)._attach(bundle=probe)
    if method == "evolve":
        enc: _Encoding = _Direct(resolution, (h, w), mutation_rate, mutation_scale, probe.device)
    else:
        enc = _CPPN((h, w), probe.device)
    return _evolve(probe, index, enc, steps, population, elite, seed, confidence, refine_steps, refine_eps, callback,
                   method)._attach(bundle=probe)


# ----- scoring ---------------------------------------------------------------------------------------
@torch.no_grad()
def _fitness(probe: ModelBundle, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Target probability of each 8-bit image, in chunks: (N,) on the device."""
    out = []
    for chunk, t in zip(quantize(images).split(EVAL_BATCH), targets.split(EVAL_BATCH)):
        out.append(probe.predict(chunk).gather(1, t[:, None])[:, 0])
    return torch.cat(out)


def _measure(probe: ModelBundle, images: torch.Tensor, targets: list[int]) -> tuple[torch.Tensor, ...]:
    q = quantize(images)
    with torch.no_grad():
        probs = probe.predict(q)
    t = torch.tensor(targets, device=probs.device)
    return q, probs.gather(1, t[:, None])[:, 0].cpu(), probs.argmax(1).cpu()


# ----- gradient ascent from noise ---------------------------------------------------------------------
def _stop_on_saved(probe: ModelBundle, param: E.Parameterization, targets: torch.Tensor, confidence: float):
    """stop_when for the engine: scores the 8-bit version of the parameterization's *current* images
    (after the step), so when it stops, the final iterate is exactly what passed."""
    @torch.no_grad()
    def stop(_fwd: E.Forward) -> torch.Tensor:
        return _fitness(probe, param(), targets) >= confidence
    return stop


def _engine_callback(callback: Callback | None, probe: ModelBundle, targets: torch.Tensor, phase: str,
                     offset: int = 0):
    if callback is None:
        return None

    def cb(step: int, total: int, loss: float, fwd: E.Forward) -> None:
        probs = torch.softmax(fwd.logits.float(), 1).gather(1, targets[:, None])[:, 0]
        callback(offset + step, offset + total, probs.tolist(), phase)
    return cb


def _gradient(probe: ModelBundle, targets: list[int], steps: int, lr: float, seed: int, confidence: float,
              size: tuple[int, int], callback: Callback | None) -> NoiseResult:
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand((len(targets), 3, *size), generator=gen).to(probe.device)
    t = torch.tensor(targets, device=probe.device)
    param = E.Pixels(noise)
    res = E.optimize(probe, param, E.cross_entropy(t), steps=steps, lr=lr, optimizer="adam", check_every=5,
                     stop_when=_stop_on_saved(probe, param, t, confidence), keep_best=False,
                     callback=_engine_callback(callback, probe, t, "gradient"))
    images, conf, pred = _measure(probe, res.final, targets)
    return NoiseResult(images=images, targets=targets, confidence=conf, predicted=pred, threshold=confidence,
                       method="gradient", steps=[res.steps] * len(targets), refine_steps=[0] * len(targets),
                       history=[res.losses] * len(targets), evaluations=res.steps * len(targets),
                       stopped="interrupted" if res.interrupted else "done",
                       details=[{"loss_curve": res.losses} for _ in targets])


# ----- evolutionary search ------------------------------------------------------------------------------
class _Encoding:
    """How genomes are made, varied and drawn."""

    def random(self, rng: np.random.Generator) -> Any: ...
    def child(self, parents: list[Any], rng: np.random.Generator) -> Any: ...
    def render(self, genomes: list[Any]) -> torch.Tensor: ...
    def describe(self, genome: Any) -> dict: return {}


class _Direct(_Encoding):
    def __init__(self, resolution: int, size: tuple[int, int], rate: float, scale: float, device: torch.device):
        self.res, self.size, self.rate, self.scale, self.device = resolution, size, rate, scale, device

    def random(self, rng):
        return torch.from_numpy(rng.random((3, self.res, self.res), dtype=np.float32))

    def child(self, parents, rng):
        a = parents[0]
        if len(parents) > 1:  # uniform crossover of two elites
            take = torch.from_numpy(rng.random(a.shape) < 0.5)
            a = torch.where(take, a, parents[1])
        hit = torch.from_numpy(rng.random(a.shape) < self.rate)
        step = torch.from_numpy(rng.normal(0, self.scale, a.shape).astype(np.float32))
        return torch.where(hit, a + step, a).clamp(0, 1)

    def render(self, genomes):
        grid = torch.stack(genomes).to(self.device)
        return F.interpolate(grid, size=self.size, mode="nearest")

    def describe(self, genome):
        return {"encoding": f"direct {self.res}x{self.res} RGB grid"}


class _CPPN(_Encoding):
    def __init__(self, size: tuple[int, int], device: torch.device):
        self.size, self.device = size, device
        self.coords = cppn.coordinates(*size, device=device)

    def random(self, rng):
        return cppn.random_genome(rng)

    def child(self, parents, rng):
        return cppn.mutate(parents[0], rng)

    @torch.no_grad()
    def render(self, genomes):
        return torch.stack([cppn.render(g, self.coords) for g in genomes])

    def describe(self, genome):
        return {"encoding": "CPPN", **genome.describe()}


def _evolve(probe: ModelBundle, targets: list[int], enc: _Encoding, generations: int, population: int, elite: int,
            seed: int, confidence: float, refine_steps: int, refine_eps: float, callback: Callback | None,
            method: str) -> NoiseResult:
    """Elitist (mu + lambda) search per target; all targets' children are scored in one batch."""
    rng = np.random.default_rng(seed)
    n_t = len(targets)
    pops = [[enc.random(rng) for _ in range(population)] for _ in targets]
    flat = [g for pop in pops for g in pop]
    t_flat = torch.tensor([t for t in targets for _ in range(population)], device=probe.device)
    scores = _fitness(probe, enc.render(flat), t_flat).cpu().view(n_t, population)
    fits = [list(map(float, row)) for row in scores]
    evaluations = len(flat)
    history = [[max(f)] for f in fits]
    used = [0] * n_t
    stopped = "done"
    try:
        for gen in range(1, generations + 1):
            active = [i for i in range(n_t) if max(fits[i]) < confidence]
            if not active:
                break
            children, owners = [], []
            for i in active:
                order = np.argsort(fits[i])[::-1][:elite]
                pops[i] = [pops[i][k] for k in order]
                fits[i] = [fits[i][k] for k in order]
                for _ in range(population - elite):
                    pick = rng.choice(elite, size=2 if rng.random() < 0.5 else 1, replace=False)
                    children.append(enc.child([pops[i][k] for k in pick], rng))
                    owners.append(i)
            t_children = torch.tensor([targets[i] for i in owners], device=probe.device)
            child_fit = _fitness(probe, enc.render(children), t_children).cpu().tolist()
            evaluations += len(children)
            for child, owner, fit in zip(children, owners, child_fit):
                pops[owner].append(child)
                fits[owner].append(fit)
            for i in active:
                used[i] = gen
                history[i].append(max(fits[i]))
            if callback is not None:
                callback(gen, generations, [h[-1] for h in history], "evolve")
    except KeyboardInterrupt:
        stopped = "interrupted"

    best = [pops[i][int(np.argmax(fits[i]))] for i in range(n_t)]
    images = quantize(enc.render(best))
    refine = [0] * n_t
    short = [i for i in range(n_t) if max(fits[i]) < confidence]
    if short and refine_steps > 0 and stopped == "done":
        refined, n_steps, interrupted = _refine(probe, images[short], [targets[i] for i in short], refine_steps,
                                                refine_eps, confidence, callback, generations)
        images[short] = refined
        for i in short:
            refine[i] = n_steps
        stopped = "interrupted" if interrupted else stopped
    images, conf, pred = _measure(probe, images, targets)
    details = [dict(enc.describe(best[i]), best_fitness_curve=[round(v, 6) for v in history[i]],
                    **({"refine_linf": round(refine_eps, 6)} if refine[i] else {})) for i in range(n_t)]
    return NoiseResult(images=images, targets=targets, confidence=conf, predicted=pred, threshold=confidence,
                       method=method, steps=used, refine_steps=refine, history=history, evaluations=evaluations,
                       stopped=stopped, details=details)


def _refine(probe: ModelBundle, base: torch.Tensor, targets: list[int], steps: int, eps: float,
            confidence: float, callback: Callback | None, offset: int) -> tuple[torch.Tensor, int, bool]:
    """Signed-gradient steps on a perturbation of the evolved images, inside an L-inf ball of `eps`: the
    evolved image stays what it looks like, the last stretch to the confidence is gradient work."""
    t = torch.tensor(targets, device=probe.device)
    param = E.Perturbation(base, eps=eps, norm="linf", random_start=False)
    res = E.optimize(probe, param, E.cross_entropy(t), steps=steps, lr=eps / 8, optimizer="sign", check_every=5,
                     stop_when=_stop_on_saved(probe, param, t, confidence), keep_best=False,
                     callback=_engine_callback(callback, probe, t, "refine", offset))
    return res.final, res.steps, res.interrupted
