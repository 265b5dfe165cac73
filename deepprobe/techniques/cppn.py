"""Compositional pattern-producing networks (CPPNs): the indirect encoding of Nguyen et al. (2015).

A genome is a small feed-forward network of sin / Gaussian / sigmoid / abs / tanh nodes over the pixel
coordinates (x, y, r = distance to the centre, bias) with three sigmoid outputs (R, G, B). Evaluated at
every pixel it draws the regular, symmetric, repeating patterns of the paper. Evolution is NEAT-lite:
perturb or reset weights, split a connection with a new node, add a connection, swap a node's function.
Rendering is torch code on the model's device (whole images at once).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

ACTIVATIONS = {
    "sin": torch.sin,
    "gauss": lambda v: torch.exp(-v * v),
    "sigmoid": torch.sigmoid,
    "abs": torch.abs,
    "tanh": torch.tanh,
    "identity": lambda v: v,
}
HIDDEN = ("sin", "gauss", "sigmoid", "abs", "tanh", "identity")
INPUTS = 4  # x, y, r, bias
OUTPUTS = 3  # R, G, B (sigmoid)
WEIGHT_SD = 2.0  # large enough that sin/Gaussian nodes repeat a few times across the image


@dataclass
class Genome:
    """Nodes (activation, depth in (0,1) for hidden nodes) and weighted connections from shallower to
    deeper nodes, so the network is always feed-forward."""

    acts: list[str]
    depth: list[float]
    conns: list[tuple[int, int]]
    weights: np.ndarray
    enabled: list[bool] = field(default_factory=list)

    def copy(self) -> Genome:
        return Genome(list(self.acts), list(self.depth), list(self.conns), self.weights.copy(), list(self.enabled))

    @property
    def hidden(self) -> int:
        return len(self.acts) - INPUTS - OUTPUTS

    def describe(self) -> dict:
        return {"hidden_nodes": self.hidden, "connections": int(sum(self.enabled)),
                "functions": sorted(set(self.acts[INPUTS + OUTPUTS:]))}


def random_genome(rng: np.random.Generator, hidden: int = 5) -> Genome:
    """A layer of `hidden` periodic/symmetric nodes fed by every input and feeding every output (plus a
    bias into each output), so even generation 0 draws stripes, rings and blobs rather than gradients."""
    acts = ["input"] * INPUTS + ["sigmoid"] * OUTPUTS
    depth = [0.0] * INPUTS + [1.0] * OUTPUTS
    conns = [(INPUTS - 1, INPUTS + o) for o in range(OUTPUTS)]  # bias -> outputs
    for h in range(hidden):
        node = len(acts)
        acts.append(("sin", "gauss", "sin", "abs", "tanh", "gauss")[int(rng.integers(6))])
        depth.append(float(rng.uniform(0.3, 0.7)))
        conns += [(i, node) for i in range(INPUTS)] + [(node, INPUTS + o) for o in range(OUTPUTS)]
    return Genome(acts, depth, conns, rng.normal(0, WEIGHT_SD, len(conns)), [True] * len(conns))


def mutate(parent: Genome, rng: np.random.Generator, add_node: float = 0.15, add_conn: float = 0.25,
           swap_fn: float = 0.05, weight_rate: float = 0.8, weight_scale: float = 0.5) -> Genome:
    """A mutated copy: weights perturbed (some reset), sometimes a new node, connection or function."""
    g = parent.copy()
    hit = rng.random(len(g.weights)) < weight_rate
    reset = rng.random(len(g.weights)) < 0.1
    g.weights = np.where(hit, g.weights + rng.normal(0, weight_scale, len(g.weights)), g.weights)
    g.weights = np.where(reset, rng.normal(0, WEIGHT_SD, len(g.weights)), g.weights)
    if rng.random() < add_node:
        _add_node(g, rng)
    if rng.random() < add_conn:
        _add_conn(g, rng)
    if g.hidden and rng.random() < swap_fn:
        g.acts[INPUTS + OUTPUTS + int(rng.integers(g.hidden))] = HIDDEN[int(rng.integers(len(HIDDEN)))]
    return g


def _add_node(g: Genome, rng: np.random.Generator) -> None:
    live = [i for i, on in enumerate(g.enabled) if on]
    if not live:
        return
    c = live[int(rng.integers(len(live)))]
    src, dst = g.conns[c]
    g.enabled[c] = False
    node = len(g.acts)
    g.acts.append(HIDDEN[int(rng.integers(len(HIDDEN)))])
    lo, hi = g.depth[src], g.depth[dst]
    g.depth.append(lo + (hi - lo) * rng.uniform(0.25, 0.75))
    g.conns += [(src, node), (node, dst)]
    g.weights = np.concatenate([g.weights, [rng.normal(0, WEIGHT_SD), g.weights[c]]])
    g.enabled += [True, True]


def _add_conn(g: Genome, rng: np.random.Generator, tries: int = 10) -> None:
    existing = set(g.conns)
    n = len(g.acts)
    for _ in range(tries):
        a, b = int(rng.integers(n)), int(rng.integers(INPUTS, n))
        if g.depth[a] < g.depth[b] and (a, b) not in existing:
            g.conns.append((a, b))
            g.weights = np.concatenate([g.weights, [rng.normal(0, WEIGHT_SD)]])
            g.enabled.append(True)
            return


def coordinates(height: int, width: int, device: torch.device | str = "cpu", scale: float = 2.0) -> torch.Tensor:
    """(4,H,W): x, y in [-scale, scale] (aspect kept), r, and a bias plane of ones."""
    aspect = width / height
    ys = torch.linspace(-scale, scale, height, device=device)
    xs = torch.linspace(-scale * aspect, scale * aspect, width, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    r = torch.sqrt(x * x + y * y) / math.sqrt(1 + aspect * aspect)
    return torch.stack([x, y, r, torch.ones_like(x)])


def render(g: Genome, coords: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(3,H,W) in [0,1]; `weights` (a tensor, e.g. an nn.Parameter) overrides g.weights."""
    w = torch.as_tensor(g.weights, dtype=coords.dtype, device=coords.device) if weights is None else weights
    incoming: dict[int, list[int]] = {}
    for i, ((_, dst), on) in enumerate(zip(g.conns, g.enabled)):
        if on:
            incoming.setdefault(dst, []).append(i)
    values: dict[int, torch.Tensor] = {i: coords[i] for i in range(INPUTS)}
    zero = torch.zeros_like(coords[0])
    for node in sorted(range(INPUTS, len(g.acts)), key=lambda k: g.depth[k]):
        total = zero
        for c in incoming.get(node, ()):
            total = total + w[c] * values[g.conns[c][0]]
        values[node] = ACTIVATIONS[g.acts[node]](total)
    return torch.stack([values[INPUTS + o] for o in range(OUTPUTS)])
