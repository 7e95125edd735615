"""Interval bound propagation (Gowal et al. 2018): a box in, a box out of every operation."""

from __future__ import annotations

from torch import Tensor

from .network import Activation, Affine, MaxPieces, Network, Op


def affine(op: Affine, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    centre, radius = op.fn((l + u) / 2), op.abs_fn((u - l) / 2)
    return centre - radius, centre + radius


def activation(op: Activation, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    return op.fn(l), op.fn(u)  # ReLU, sigmoid and tanh are non-decreasing


def max_pieces(op: MaxPieces, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    return l.amax(dim=-1), u.amax(dim=-1)


def step(op: Op, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    if isinstance(op, Affine):
        return affine(op, l, u)
    if isinstance(op, Activation):
        return activation(op, l, u)
    return max_pieces(op, l, u)


def interval_bounds(net: Network, lo: Tensor, hi: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Bounds of every operation's input and of the output: a list of len(ops) + 1 boxes [N, *shape]."""
    boxes = [(lo, hi)]
    for op in net.ops:
        boxes.append(step(op, *boxes[-1]))
    return boxes
