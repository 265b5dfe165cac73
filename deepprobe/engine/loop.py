"""The one optimization loop every synthesis technique runs on.

It owns: the optimizer (Adam, L-BFGS, signed/normalized gradient steps with projection), robustness
transforms, per-image best-so-far tracking, the loss curve, a NaN/inf guard, Ctrl-C (stop and keep the
best), progress callbacks, and autocast on CUDA. It never syncs with the host inside the loop except
every `check_every` steps (NaN check, callback).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..models import ModelBundle
from .capture import Forward, forward
from .objectives import Objective
from .params import Parameterization
from .transforms import Transform

OPTIMIZERS = ("adam", "lbfgs", "sign", "normgrad", "sgd")
LBFGS_LINE_SEARCH = 20  # most extra evaluations the strong-Wolfe line search may spend in one L-BFGS step
ProgressCallback = Callable[[int, int, float, Forward], None]


@dataclass
class OptimResult:
    """Best images per image (lowest loss seen), the last images, and how the run went."""

    images: torch.Tensor
    final: torch.Tensor
    best_loss: torch.Tensor
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    stopped: str = "done"  # done | early | interrupted | nan
    message: str | None = None

    @property
    def interrupted(self) -> bool:
        return self.stopped == "interrupted"


def evaluate(bundle: ModelBundle, images: torch.Tensor, objective: Objective,
             transform: Transform | None = None) -> tuple[torch.Tensor, Forward]:
    """Per-image loss of `objective` on `images` (transform applied to the model input only)."""
    model_input = transform(images) if transform else images
    fwd = forward(bundle, model_input, objective.layers, need_logits=objective.needs_logits)
    fwd.images = images
    return objective(fwd), fwd


def optimize(bundle: ModelBundle, param: Parameterization, objective: Objective, *, steps: int, lr: float,
             optimizer: str = "adam", transforms: Sequence[Transform] = (), callback: ProgressCallback | None = None,
             check_every: int = 10, stop_when: Callable[[Forward], torch.Tensor] | None = None,
             keep_best: bool = True, amp: bool | None = None,
             schedule: Callable[[int], float] | None = None) -> OptimResult:
    """Minimize `objective` over the parameters of `param` for `steps` steps.

    stop_when(fwd) -> (N,) bool: stop early once it holds for every image (checked every `check_every`).
    callback(step, steps, mean_loss, fwd) is called every `check_every` steps and at the end.
    amp: bfloat16 autocast on CUDA; None follows the bundle (`--amp` sets bundle.notes["amp"]).
    schedule(i) -> factor: step i (0-based) uses lr * factor (e.g. `cosine_decay(steps)`); None keeps lr fixed.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    param = param.to(bundle.device)
    params = [p for p in param.parameters() if p.requires_grad]
    transform = _compose(transforms)
    opt = _make_optimizer(optimizer, params, lr)
    amp = bool(getattr(bundle, "notes", {}).get("amp")) if amp is None else amp
    autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if amp and bundle.device.type == "cuda"
                else contextlib.nullcontext())

    with torch.no_grad():
        first = param()
    best_images = first.detach().clone()
    best_loss = torch.full((first.shape[0],), float("inf"), device=first.device)
    curve: list[torch.Tensor] = []
    stopped, message, step = "done", None, 0
    last_fwd: Forward | None = None

    def loss_and_grad() -> torch.Tensor:
        nonlocal best_images, best_loss, last_fwd
        opt_zero(params)
        images = param()
        with autocast:
            per_image, fwd = evaluate(bundle, images, objective, transform)
        per_image = per_image.float()
        total = per_image.sum()
        total.backward()
        if keep_best:
            with torch.no_grad():
                better = per_image.detach() < best_loss
                best_loss = torch.where(better, per_image.detach(), best_loss)
                best_images = torch.where(better.view(-1, 1, 1, 1), images.detach(), best_images)
        last_fwd = fwd
        curve.append(per_image.detach().mean())
        return total

    try:
        for step in range(1, steps + 1):
            step_lr = lr * schedule(step - 1) if schedule is not None else lr
            if schedule is not None and opt is not None:
                for group in opt.param_groups:
                    group["lr"] = step_lr
            if optimizer == "lbfgs":
                opt.step(loss_and_grad)
            else:
                loss_and_grad()
                _step(optimizer, opt, param, params, step_lr)
            param.project_()
            if step % check_every == 0 or step == steps:
                latest = float(curve[-1])
                if not torch.isfinite(torch.tensor(latest)):
                    stopped = "nan"
                    message = f"loss became {latest} at step {step}; stopped and kept the best result so far"
                    break
                if callback is not None:
                    callback(step, steps, latest, last_fwd)
                if stop_when is not None and bool(stop_when(last_fwd).all()):
                    stopped = "early"
                    break
    except KeyboardInterrupt:
        stopped, message = "interrupted", f"interrupted at step {step}; kept the best result so far"

    with torch.no_grad():
        final = param().detach()
    if not keep_best or not torch.isfinite(best_loss).any():
        best_images = final if stopped != "nan" else best_images
    losses = [float(v) for v in torch.stack(curve).cpu()] if curve else []
    return OptimResult(images=best_images, final=final, best_loss=best_loss.cpu(), losses=losses, steps=step,
                       stopped=stopped, message=message)


def cosine_decay(steps: int, floor: float = 0.01) -> Callable[[int], float]:
    """A schedule for optimize(): the lr factor falls from 1 to `floor` along half a cosine over `steps`."""
    return lambda i: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / max(steps, 1)))


def opt_zero(params: list[torch.Tensor]) -> None:
    for p in params:
        p.grad = None


def _compose(transforms: Sequence[Transform]) -> Transform | None:
    if not transforms:
        return None

    def apply(x: torch.Tensor) -> torch.Tensor:
        for t in transforms:
            x = t(x)
        return x
    return apply


def _make_optimizer(name: str, params: list[torch.Tensor], lr: float):
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "lbfgs":
        # One iteration per engine step. torch gives the line search max_eval - 1 evaluations and max_eval
        # defaults to max_iter * 5 // 4 = 1, which leaves it none: a rejected trial step then repeats forever.
        return torch.optim.LBFGS(params, lr=lr, max_iter=1, max_eval=1 + LBFGS_LINE_SEARCH, history_size=50,
                                 line_search_fn="strong_wolfe")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    return None


@torch.no_grad()
def _step(name: str, opt, param: Parameterization, params: list[torch.Tensor], lr: float) -> None:
    if opt is not None:
        opt.step()
        return
    for p in params:
        if p.grad is None:
            continue
        if name == "sign":
            p.sub_(lr * param.steepest(p.grad))
        else:  # normgrad: Deep Dream's step, gradient divided by its mean magnitude per image
            dims = tuple(range(1, p.grad.dim()))
            scale = p.grad.abs().mean(dim=dims, keepdim=True).clamp_min(1e-8)
            p.sub_(lr * p.grad / scale)
