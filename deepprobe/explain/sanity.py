"""Model-parameter randomization sanity check (Adebayo et al. 2018) and Spearman rank correlation in torch.

A map that explains the *model* must change when the model's weights are destroyed. Cascading randomization
re-initializes layer groups from the logits down (classifier, head, last block ... first block, stem), one
more group each step, on a deep copy of the network (the user's probe is never touched), recomputes the maps
for the same target classes and compares each with the original map by Spearman rank correlation. A map that
stays close to 1 all the way down is an edge detector, not an explanation.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import torch
from torch import nn

MIN_GROUPS = 8  # split the largest container until the cascade has at least this many steps
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


# ------------------------------------------------------------------------------------------ rank correlation
def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """(N,P) -> (N,P) float ranks 0..P-1 per row, ties sharing their average rank (as scipy.stats.rankdata)."""
    n, p = values.shape
    sorted_values, order = values.float().sort(dim=1)
    new = torch.ones(n, p, dtype=torch.bool, device=values.device)
    new[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]  # a new tie group starts here (and at each row)
    group = new.flatten().cumsum(0) - 1  # tie-group id over all rows
    position = torch.arange(p, device=values.device, dtype=torch.float64).repeat(n)
    groups = int(group[-1]) + 1
    total = torch.zeros(groups, dtype=torch.float64, device=values.device).index_add_(0, group, position)
    count = torch.zeros(groups, dtype=torch.float64, device=values.device).index_add_(0, group,
                                                                                        torch.ones_like(position))
    mean_rank = (total / count)[group].view(n, p)
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps, (N,...) x (N,...) -> (N,): Pearson of average ranks.

    A constant map has no order: its correlation with anything is 0 (scipy gives nan).
    """
    ra, rb = average_ranks(a.flatten(1)), average_ranks(b.flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = (ra.pow(2).sum(1) * rb.pow(2).sum(1)).sqrt()
    corr = (ra * rb).sum(1) / denom.clamp_min(1e-30)
    return torch.where(denom > 0, corr, torch.zeros_like(corr)).float()


# ------------------------------------------------------------------------------------------ layer groups
def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _children(name: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    prefix = f"{name}." if name else ""
    return [(prefix + n, c) for n, c in module.named_children() if _has_params(c)]


def randomization_groups(net: nn.Module, min_groups: int = MIN_GROUPS) -> list[tuple[str, list[nn.Module]]]:
    """Layer groups of a network in cascade order (logits first): [(name, modules)], names as `deepprobe layers`.

    The top-level children with parameters, the largest container split into its children until there are
    `min_groups` (EfficientNet-Lite0: classifier, conv_head, blocks.6 ... blocks.0, conv_stem); a norm layer
    joins the layer before it (bn2 with conv_head); parameters held by the network itself (a ViT's cls_token and
    pos_embed) join the first group.
    """
    groups = _children("", net)
    while len(groups) < min_groups:
        splittable = [(sum(p.numel() for p in m.parameters()), i) for i, (n, m) in enumerate(groups)
                      if _children(n, m)]
        if not splittable:
            break
        _, i = max(splittable)
        groups[i:i + 1] = _children(*groups[i])
    merged: list[tuple[str, list[nn.Module]]] = []
    for name, module in groups:
        if isinstance(module, _NORMS) and merged:
            merged[-1][1].append(module)
        else:
            merged.append((name, [module]))
    own = [p for p in net.parameters(recurse=False)]
    if own and merged:
        merged[0][1].append(_OwnParameters(net))
    return merged[::-1]


class _OwnParameters:
    """Stands for the parameters a module holds itself (not through children) inside a group."""

    def __init__(self, module: nn.Module):
        self.module = module

    def modules(self):
        return []

    def parameters(self):
        return self.module.parameters(recurse=False)


@torch.no_grad()
def randomize_(modules: list, generator: torch.Generator) -> None:
    """Re-initialize in place: each module's own `reset_parameters` (PyTorch's default init; norm layers also
    reset their running statistics); any parameter no reset covers is drawn from N(0, its own std)."""
    covered: set[int] = set()
    for group_member in modules:
        for m in group_member.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
                covered.update(id(p) for p in m.parameters(recurse=False))
    for group_member in modules:
        for p in group_member.parameters():
            if id(p) not in covered:
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
                spread = p.float().std().nan_to_num(0.02) if p.numel() > 1 else p.new_tensor(0.02)  # a scalar
                p.copy_(noise.to(p.device, p.dtype) * spread.clamp_min(1e-3))  # (CLIP's logit_scale) has no std
                covered.add(id(p))


# ------------------------------------------------------------------------------------------ the cascade
def copy_probe(probe):
    """A probe whose network is a deep copy: randomizing it leaves the user's weights as they were."""
    return dataclasses.replace(probe, net=copy.deepcopy(probe.net))


def cascading_randomization(probe, x: torch.Tensor, explainer: Callable[[object, torch.Tensor], torch.Tensor],
                            originals: torch.Tensor | None = None, seed: int = 0,
                            callback: Callable[[int], None] | None = None
                            ) -> tuple[list[str], torch.Tensor]:
    """Spearman correlation of maps after each cumulative randomization step with the original maps.

    `explainer(probe, x) -> (N,H,W)` computes the maps (same method, layer and target classes every time).
    Returns (["none", group names...], (N, 1 + groups)); column 0 compares the copy before any change with the
    originals (1 up to nondeterminism). The generator is seeded: the same seed gives the same random weights.
    `callback(k)` hears after each step how many images' maps were computed.
    """
    originals = explainer(probe, x) if originals is None else originals
    names, corr = cascade_many(probe, x, {"map": explainer}, {"map": originals}, seed, callback)
    return names, corr["map"]


def cascade_many(probe, x: torch.Tensor, explainers: dict[str, Callable[[object, torch.Tensor], torch.Tensor]],
                 originals: dict[str, torch.Tensor], seed: int = 0, callback: Callable[[int], None] | None = None
                 ) -> tuple[list[str], dict[str, torch.Tensor]]:
    """The cascade for several maps at once: one copy of the network, randomized once per step, every explainer
    run on it (the same seed gives every map the same random weights as a cascade of its own would)."""
    work = copy_probe(probe)
    groups = randomization_groups(work.inner)
    names, columns = ["none"], {key: [] for key in explainers}
    # the probe's own GPU ("cuda" alone means the current one, e.g. the LOCAL_RANK-th under torchrun)
    devices = ([torch.cuda.current_device() if work.device.index is None else work.device.index]
               if work.device.type == "cuda" else [])
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # reset_parameters draws from the global generator: fork it, seed it
        generator = torch.Generator().manual_seed(seed)
        for name, modules in [("none", [])] + groups:
            if modules:
                randomize_(modules, generator)
                names.append(name)
            for key, explainer in explainers.items():
                columns[key].append(spearman(explainer(work, x), originals[key]))
                if callback is not None:
                    callback(x.shape[0])
    return names, {key: torch.stack(cols, 1) for key, cols in columns.items()}
