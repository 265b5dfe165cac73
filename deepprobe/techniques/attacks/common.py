"""What the robustness attacks share: inputs on the 8-bit grid, losses, ball projection, the active set."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from ... import engine as E
from ...device import fast_layout
from ...errors import DeepprobeError
from ...io import quantize
from ...models import ModelBundle
from ...options.attacks import NORMS
from . import rng

Seeds = int | Sequence[int] | torch.Tensor | None
StepProgress = Callable[[int, int], None]  # (steps done, steps in all) within one attack


@dataclass
class Adversarial:
    """One attack's outcome per image. images: (N,3,H,W) on the 8-bit grid, the clean (rounded) image where
    the attack failed; success: (N,) counted (checked on the 8-bit image); cost: (N,) gradient steps or
    queries spent on the image; predicted: (N,) class of `images` (the label where the attack failed)."""

    images: torch.Tensor
    success: torch.Tensor
    cost: torch.Tensor
    predicted: torch.Tensor


def prepare(bundle: ModelBundle, x: torch.Tensor, y, eps: float, norm: str, seeds: Seeds):
    """(x on the grid, labels, per-image keys) on the model's device, after checking the arguments."""
    if norm not in NORMS:
        raise DeepprobeError(f"unknown norm {norm!r} (choose from {', '.join(NORMS)})")
    if not eps >= 0:
        raise DeepprobeError(f"eps must be >= 0, got {eps}")
    x = x.detach().float().to(bundle.device)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    labels = torch.as_tensor(y, dtype=torch.long).to(bundle.device).flatten()
    if labels.numel() == 1 and x.shape[0] > 1:
        labels = labels.expand(x.shape[0]).clone()
    if labels.numel() != x.shape[0]:
        raise DeepprobeError(f"got {labels.numel()} labels for {x.shape[0]} images")
    return quantize(x), labels, rng.keys(seeds, x.shape[0], bundle.device)


def offset_progress(progress: StepProgress | None, done: int, total: int) -> StepProgress | None:
    """A progress reporter for one part (a target, a restart) of a longer attack."""
    if progress is None:
        return None
    return lambda step, _steps: progress(done + step, total)


def groups(index: torch.Tensor, size: int | None) -> list[torch.Tensor]:
    """`index` in consecutive slices of at most `size` rows (one slice when size is None)."""
    if size is None or index.numel() <= size:
        return [index]
    return list(index.split(size))


def repeat_runs(checker, keys: torch.Tensor, count: int, length: int, progress: StepProgress | None,
             run: Callable[[torch.Tensor, torch.Tensor, int, StepProgress | None], torch.Tensor]) -> torch.Tensor:
    """`count` runs of `run(todo, keys, r, progress)`, each on the images the checker has not counted yet, with
    fresh per-image keys; returns the cost per image of all runs (`length` steps each, for progress)."""
    cost = torch.zeros(checker.x.shape[0], dtype=torch.long, device=checker.x.device)
    for r in range(count):
        todo = (~checker.success).nonzero().flatten()
        if todo.numel() == 0:
            break
        cost[todo] += run(todo, rng.derive(keys[todo], "restart", r), r,
                          offset_progress(progress, r * length, count * length))
    if progress is not None:
        progress(count * length, count * length)
    return cost


# ----- losses (lower = better for the attacker, as every engine objective) --------------------------------
def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{i != y} z_i: > 0 while the image is still classified as y."""
    own = logits.gather(1, y[:, None])[:, 0]
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return own - others


def _need_classes(logits: torch.Tensor, count: int, what: str) -> None:
    if logits.shape[1] < count:
        raise DeepprobeError(f"{what} needs a model with at least {count} classes (this one has {logits.shape[1]})")


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Croce & Hein's difference of logits ratio (untargeted): margin / (z_pi1 - z_pi3), shift and scale free."""
    _need_classes(logits, 3, "the DLR loss (apgd-dlr)")
    top = logits.topk(3, dim=1).values
    return margin(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: (z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
    _need_classes(logits, 4, "the targeted DLR loss (apgd-t)")
    top = logits.topk(4, dim=1).values
    gap = logits.gather(1, y[:, None])[:, 0] - logits.gather(1, target[:, None])[:, 0]
    return gap / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def objective(loss: str, y: torch.Tensor, target: torch.Tensor | None = None) -> E.Objective:
    """The engine objective an attack descends: -CE(y), DLR, or targeted DLR towards `target`."""
    if loss == "ce":
        return -E.cross_entropy(y)
    if loss == "dlr" and target is None:
        return E.Objective(lambda f: dlr(f.logits.float(), y), "dlr", needs_logits=True)
    if loss == "dlr":
        return E.Objective(lambda f: dlr_targeted(f.logits.float(), y, target), "dlr-targeted", needs_logits=True)
    raise DeepprobeError(f"unknown loss {loss!r} (choose from ce, dlr)")


@torch.no_grad()
def logits(bundle: ModelBundle, images: torch.Tensor, group: int | None = None) -> torch.Tensor:
    """(N, classes) float logits without gradients: one forward pass, or one per `group` images."""
    if group is None or images.shape[0] <= group:
        return bundle.net(fast_layout(images)).float()
    return torch.cat([bundle.net(fast_layout(part)).float() for part in images.split(group)])


def over_targets(bundle: ModelBundle, checker, keys: torch.Tensor, count: int, length: int,
                 progress: StepProgress | None,
                 run: Callable[[torch.Tensor, torch.Tensor, StepProgress | None], torch.Tensor]) -> torch.Tensor:
    """APGD-T / FAB-T: `run(targets, keys, progress)` once per runner-up class of each clean image (the 2nd,
    3rd, ... (count+1)-th most likely, capped at the number of classes - 1), in turn; returns the cost."""
    ranked = logits(bundle, checker.x, checker.group).argsort(1, descending=True)
    count = max(1, min(count, ranked.shape[1] - 1))
    cost = torch.zeros(checker.x.shape[0], dtype=torch.long, device=checker.x.device)
    for j in range(count):
        cost += run(ranked[:, j + 1], rng.derive(keys, "target", j),
                    offset_progress(progress, j * length, count * length))
    return cost


def loss_and_grad(bundle: ModelBundle, images: torch.Tensor, goal: E.Objective | Callable[[slice], E.Objective],
                  group: int | None = None):
    """(per-image loss, logits, gradient of the loss wrt the images): one forward and one backward pass, or one
    per `group` images; then `goal(rows)` gives the objective of the rows in slice `rows`. Every image an attack
    still works on, of however many batches, is one state: its passes are full but the last."""
    if group is None or images.shape[0] <= group:
        return _loss_and_grad(bundle, images, goal if isinstance(goal, E.Objective) else goal(slice(None)))
    parts = [_loss_and_grad(bundle, images[start:start + group], goal(slice(start, start + group)))
             for start in range(0, images.shape[0], group)]
    return tuple(torch.cat(values) for values in zip(*parts))


def _loss_and_grad(bundle: ModelBundle, images: torch.Tensor, goal: E.Objective):
    images = fast_layout(images.detach()).requires_grad_(True)
    with torch.enable_grad():
        per_image, fwd = E.evaluate(bundle, images, goal)
        (grad,) = torch.autograd.grad(per_image.float().sum(), images)
    return per_image.detach().float(), fwd.logits.detach().float(), grad.detach()


# ----- geometry -------------------------------------------------------------------------------------------
def _view(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def project(images: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Nearest point of the eps ball around x (L-inf: clip; L2: rescale), then clamped to [0,1]."""
    delta = images - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        size = _view(delta.flatten(1).norm(dim=1))
        delta = delta * torch.clamp(eps / (size + 1e-12), max=1.0)
    return (x + delta).clamp(0, 1)


def steepest(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Unit step direction of a gradient for the norm: its sign (L-inf) or its direction (L2)."""
    if norm == "linf":
        return grad.sign()
    return grad / (_view(grad.flatten(1).norm(dim=1)) + 1e-12)


def random_start(keys: torch.Tensor, x: torch.Tensor, radius: float, norm: str) -> torch.Tensor:
    """x plus a random change of size `radius` (AutoAttack's start: uniform L-inf corner-scaled noise, or a
    Gaussian direction for L2), clamped to [0,1]."""
    shape = tuple(x.shape[1:])
    if norm == "linf":
        t = 2 * rng.uniform(keys, shape) - 1
        t = t / (_view(t.flatten(1).abs().amax(1)) + 1e-12)
    else:
        t = rng.normal(keys, shape)
        t = t / (_view(t.flatten(1).norm(dim=1)) + 1e-12)
    return (x + radius * t).clamp(0, 1)


# ----- the images still being attacked ---------------------------------------------------------------------
@dataclass
class Active:
    """Per-image state of the images an attack is still working on (every field indexed by row).

    Subclasses declare their tensors as fields; `keep(mask)` drops the finished rows from all of them at
    once, so a finished image costs nothing more.
    """

    index: torch.Tensor  # (M,) position of each row in the attack's batch

    def keep(self, mask: torch.Tensor) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == mask.shape[0]:
                setattr(self, f.name, value[mask])

    def __len__(self) -> int:
        return self.index.shape[0]

    def hand_over(self, checker, index: torch.Tensor, fooled: torch.Tensor, images: torch.Tensor,
                  margins: torch.Tensor | None) -> None:
        """Give the rows misclassified in float (`fooled`) to the checker (`index`: the batch positions of
        this run's rows; `margins`: see Checker); the rows whose 8-bit example counts leave the batch."""
        if not bool(fooled.any()):
            return
        rows = fooled.nonzero().flatten()
        done = torch.zeros_like(fooled)
        done[rows] = checker(index[self.index[rows]], images[rows], None if margins is None else margins[rows])
        if bool(done.any()):
            self.keep(~done)
