"""Feature-space attacks on embedders: pull an image's embedding toward another image's, or push it away from its
own, inside an L-inf (or L2) budget.

Retrieval and k-NN classification (DINO's evaluation) only ever compare embeddings by cosine similarity, so this is
the attack that moves them: PGD (random start, signed steps, projection) on 1 - cos(f(x'), f(ref)) toward a
reference, or on cos(f(x'), f(x)) away from the original. The best iterate is rounded to the 8-bit grid inside the
budget and measured again by a fresh forward pass, so the cosines reported are those of the PNG that gets saved.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .. import engine as E
from ..display import Shows
from ..errors import DeepprobeError
from ..models.embedding import embed, require_embedder
from ..options.fool import DEFAULT_STEPS, NORMS, Options, alpha_for, eps_for
from ..options.ranges import check_ranges
from .fool import _generators, eval_mode, on_grid


@dataclass
class FeatureAttackResult(Shows):
    """Adversarial batch (on the 8-bit grid) and the cosines that say how far the embeddings moved. In Jupyter:
    `deepprobe fool`'s original | perturbation | adversarial panel per image, with the cosines."""

    images: torch.Tensor  # (N,3,H,W) in [0,1], what a saved PNG holds
    original: torch.Tensor
    away: bool  # True: pushed away from the original; False: pulled toward the reference
    cosine_before: torch.Tensor  # (N,) toward: cos(original, reference); away: 1 (the original with itself)
    cosine_after: torch.Tensor  # (N,) toward: cos(adversarial, reference); away: cos(adversarial, original)
    cosine_to_original: torch.Tensor  # (N,) cos(adversarial, original)
    linf: torch.Tensor
    l2: torch.Tensor
    steps: int
    losses: list[float] = field(default_factory=list)
    stopped: str = "done"
    message: str | None = None

    def records(self) -> list[dict]:
        return [{"goal": "away" if self.away else "toward reference",
                 "cosine_before": round(float(self.cosine_before[i]), 6),
                 "cosine_after": round(float(self.cosine_after[i]), 6),
                 "cosine_to_original": round(float(self.cosine_to_original[i]), 6),
                 "linf": float(self.linf[i]), "linf_255": round(float(self.linf[i]) * 255, 3),
                 "l2": float(self.l2[i]), "steps": self.steps, "stopped": self.stopped}
                for i in range(self.images.shape[0])]

    def figure(self):
        from ..display import stack
        from ..figures.fool import feature_panel

        panels = []
        for i, record in enumerate(self.records()):
            # the CLI's verdict without a gallery: toward = nearer the reference than its own original; away: none
            record["success"] = None if self.away else float(self.cosine_after[i]) > float(self.cosine_to_original[i])
            panels.append(feature_panel(self.original[i], self.images[i], record, f"image {i}",
                                        None if self.away else "the reference"))
        return stack(panels)


def cosine_objective(targets: torch.Tensor, toward: bool) -> E.Objective:
    """Per-image loss on the embeddings (the engine's `logits`): 1 - cos to `targets` (toward) or cos (away)."""
    goal = torch.nn.functional.normalize(targets.detach().float(), dim=-1)

    def fn(fwd: E.Forward) -> torch.Tensor:
        cos = (torch.nn.functional.normalize(fwd.logits.float(), dim=-1) * goal.to(fwd.logits.device)).sum(-1)
        return 1 - cos if toward else cos
    return E.Objective(fn, "1-cos(ref)" if toward else "cos(original)", needs_logits=True)


def feature_attack(bundle, x: torch.Tensor, reference: torch.Tensor | None = None, *, away: bool = False,
                   eps: float | None = Options.eps, alpha: float | None = Options.alpha, steps: int = DEFAULT_STEPS,
                   norm: str = Options.norm, seed: int | Sequence[int] = 0,
                   callback: Callable[[int, int, float, E.Forward], None] | None = None) -> FeatureAttackResult:
    """Move the embeddings of `x` (N,3,H,W in [0,1]) toward those of `reference` ((1,3,H,W) or one per image), or,
    with `away=True` and no reference, away from their own, within an `norm` ball of radius `eps` (default 8/255
    in L-inf), `steps` signed steps of `alpha` (default eps/4). `seed`: one int, or one per image."""
    if norm not in NORMS:
        raise DeepprobeError(f"unknown norm {norm!r} (choose from {', '.join(NORMS)})")
    check_ranges("fool", locals())
    require_embedder(bundle, "a feature attack")
    if (reference is None) != away:
        raise DeepprobeError("give a reference to move toward, or away=True (and no reference) to move away "
                             "from the original")
    x = x.detach().float().to(bundle.device)
    x = x.unsqueeze(0) if x.dim() == 3 else x
    eps_value = eps_for(norm, eps)
    with eval_mode(bundle.net), torch.no_grad():
        own = embed(bundle, x)
        if reference is not None:
            reference = reference.to(bundle.device).float()
            reference = reference.unsqueeze(0) if reference.dim() == 3 else reference
            if reference.shape[0] not in (1, x.shape[0]):
                raise DeepprobeError(f"got {reference.shape[0]} reference images for {x.shape[0]} images")
            goal = embed(bundle, reference).expand(x.shape[0], -1)
        else:
            goal = own
    param = E.Perturbation(x, eps_value, norm, random_start=True, generator=_generators(seed, x.shape[0]))
    with eval_mode(bundle.net):
        res = E.optimize(bundle, param, cosine_objective(goal, toward=not away), steps=steps,
                         lr=alpha_for(eps_value, alpha, None), optimizer="sign", callback=callback,
                         check_every=min(10, steps))
    adv = on_grid(res.images, x, eps_value, norm)
    with torch.no_grad():
        after = embed(bundle, adv)
    to_original = (after * own).sum(-1)
    delta = (adv - x).flatten(1)
    return FeatureAttackResult(
        images=adv, original=x, away=away,
        cosine_before=torch.ones(x.shape[0]) if away else (own * goal).sum(-1).cpu(),
        cosine_after=(after * goal).sum(-1).cpu(), cosine_to_original=to_original.cpu(),
        linf=delta.abs().amax(1).cpu(), l2=delta.norm(dim=1).cpu(), steps=res.steps, losses=res.losses,
        stopped=res.stopped, message=res.message)
