"""CROWN (Zhang et al. 2018): linear bounds pulled backwards through the network, concretised on the input set.

A linear function a·y of an operation's output is bounded below by a'·z + c of its input: through an affine
map exactly (a' = aW, c = a·b), through a nonlinearity by its relaxation (relax.py), the lower line where a
coefficient is ≥ 0 and the upper line where it is < 0. Pulled back to the input, min over the input set
(inputs.InputSet) finishes the bound. Each nonlinear operation's input bounds come first, by the same backward
pass from there (the identity and its negation as the linear functions), intersected with interval bounds.

α-CROWN (Xu et al. 2021) optimises the lower slopes of unstable ReLUs per margin by projected gradient ascent on
the bound itself; every slope in [0, 1] gives a sound bound, so the best seen is kept.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import ibp, relax
from .inputs import InputSet
from .network import Activation, Affine, MaxPieces, Network

Bounds = list[tuple[Tensor, Tensor] | None]  # per operation: its input's (lower, upper), None for affine ones


def relaxation(op: Activation | MaxPieces, l: Tensor, u: Tensor, alpha: Tensor | None = None) -> relax.Relaxation:
    if isinstance(op, MaxPieces):
        return relax.max_pieces(l, u)
    if op.kind == "relu":
        return relax.relu(l, u, alpha)
    return relax.sigmoid(l, u) if op.kind == "sigmoid" else relax.tanh(l, u)


def backward(net: Network, upto: int, a: Tensor, relaxations: dict[int, relax.Relaxation], stop: int = 0
             ) -> tuple[Tensor, Tensor]:
    """a [N or 1, S, *out of op upto-1] -> (a' [N or 1, S, *input of op stop], c [N or 1, S]) with a·y ≥ a'·z + c
    for every z (op stop's input) whose operation inputs lie within the bounds behind `relaxations` (op index ->
    relaxation, every tensor [N, 1 or S, ...]: one relaxation for all specs, or one per spec as α-CROWN's)."""
    n, s = a.shape[:2]
    const = torch.zeros((n, s), dtype=a.dtype)
    for k in range(upto - 1, stop - 1, -1):
        op = net.ops[k]
        if isinstance(op, Affine):
            const = const + (a * op.bias).flatten(2).sum(-1)
            a = op.transpose(a)
            continue
        sl, bl, su, bu = relaxations[k]  # each [N, 1 or S, ...]: one spec axis
        # the lower line where a coefficient is ≥ 0, the upper where < 0: one mask, the same values as
        # a⁺·sl + a⁻·su (and a⁺·bl + a⁻·bu), with two fewer passes over a
        up = a < 0
        const = const + (a * torch.where(up, bu, bl)).flatten(2).sum(-1)
        if isinstance(op, MaxPieces):
            a, up = a.unsqueeze(-1), up.unsqueeze(-1)
        a = a * torch.where(up, su, sl)
    return a, const


def _leading_linear(net: Network, upto: int) -> int | None:
    """The index of the first dense Linear when only reshapes come before it and it lies below op upto: the
    backward pass stops above it and the concretisation multiplies by its weight once (InputSet.min_linear)."""
    for k, op in enumerate(net.ops[:upto]):
        if not isinstance(op, Affine):
            return None
        if op.weight is not None and len(op.in_shape) == 1:
            return k
        if not op.reshape_only:
            return None
    return None


def lower_bound(net: Network, upto: int, a: Tensor, inputs: InputSet, relaxations: dict[int, relax.Relaxation]
                ) -> Tensor:
    """[N, S]: lower bounds of a·(output of op upto-1) over the input set."""
    first = _leading_linear(net, upto)
    if first is None:
        a_in, const = backward(net, upto, a, relaxations)
        return inputs.min_linear(a_in) + const
    a_out, const = backward(net, upto, a, relaxations, stop=first + 1)
    op = net.ops[first]
    const = const + (a_out * op.bias).flatten(2).sum(-1)
    return inputs.min_linear(a_out, op.weight) + const


def layer_bounds(net: Network, inputs: InputSet, chunk: int = 512) -> tuple[Bounds, dict[int, relax.Relaxation]]:
    """CROWN bounds of every nonlinear operation's input (intersected with interval bounds), and the relaxations
    built from them. chunk: identity rows per backward pass (memory: N × chunk × input size)."""
    lo, hi = inputs.box()
    boxes = ibp.interval_bounds(net, lo, hi)
    bounds: Bounds = [None] * len(net.ops)
    relaxations: dict[int, relax.Relaxation] = {}
    n = lo.shape[0]
    for k, op in enumerate(net.ops):
        if isinstance(op, Affine):
            continue
        shape = op.in_shape
        size = int(torch.tensor(shape).prod())
        parts = []
        for start in range(0, size, chunk):
            rows = torch.arange(start, min(size, start + chunk))
            eye = torch.zeros((len(rows), size), dtype=torch.float64)
            eye[torch.arange(len(rows)), rows] = 1.0
            # one spec for all images (batch axis 1): it stays shared until the first relaxation multiplies it
            spec = torch.cat([eye, -eye]).reshape(1, 2 * len(rows), *shape)
            b = lower_bound(net, k, spec, inputs, relaxations)
            parts.append((b[:, :len(rows)], -b[:, len(rows):]))
        l = torch.cat([p[0] for p in parts], 1).reshape(n, *shape)
        u = torch.cat([p[1] for p in parts], 1).reshape(n, *shape)
        il, iu = boxes[k]
        l, u = torch.maximum(l, il), torch.minimum(u, iu)
        bounds[k] = (l, u)
        relaxations[k] = tuple(t.unsqueeze(1) for t in relaxation(op, l, u))
    return bounds, relaxations


def margin_spec(labels: Tensor, classes: int) -> Tensor:
    """[N, C, C]: row j is e_y − e_j (row y is zero), so a·logits is logit_y − logit_j."""
    eye = torch.eye(classes, dtype=torch.float64)
    return eye[labels][:, None, :] - eye[None]


def margins(net: Network, labels: Tensor, inputs: InputSet, *, alpha_steps: int = 0, alpha_lr: float = 0.1
            ) -> Tensor:
    """[N, C] lower bounds of logit_y − logit_j over the input set (CROWN; α-CROWN with alpha_steps > 0)."""
    bounds, relaxations = layer_bounds(net, inputs)
    spec = margin_spec(labels, net.classes)
    best = lower_bound(net, len(net.ops), spec, inputs, relaxations)
    if alpha_steps <= 0:
        return best
    return _optimise_alpha(net, spec, inputs, bounds, relaxations, best, alpha_steps, alpha_lr)


def _optimise_alpha(net: Network, spec: Tensor, inputs: InputSet, bounds: Bounds,
                    relaxations: dict[int, relax.Relaxation], best: Tensor, steps: int, lr: float) -> Tensor:
    n, s = spec.shape[:2]
    relus = [k for k, op in enumerate(net.ops) if isinstance(op, Activation) and op.kind == "relu"]
    if not relus:
        return best
    alphas = {k: relaxations[k][0].expand(n, s, *net.ops[k].in_shape).clone().requires_grad_(True) for k in relus}
    opt = torch.optim.Adam(list(alphas.values()), lr=lr)
    for _ in range(steps):
        with torch.enable_grad():
            current = dict(relaxations)
            for k, alpha in alphas.items():
                l, u = bounds[k]  # type: ignore[misc]
                current[k] = relax.relu(l.unsqueeze(1), u.unsqueeze(1), alpha.clamp(0, 1))
            bound = lower_bound(net, len(net.ops), spec, inputs, current)
            best = torch.maximum(best, bound.detach())
            opt.zero_grad()
            (-bound.sum()).backward()
        opt.step()
    return best
