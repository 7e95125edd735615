"""Linear relaxations of the nonlinear operations, one small function per kind.

Given bounds l ≤ z ≤ u of an operation's input, each returns (sl, bl, su, bu) with

    sl·z + bl ≤ op(z) ≤ su·z + bu     for every z in [l, u],

where for an elementwise activation sl, su have z's shape and for MaxPieces they have z's shape [..., p]
(a weighted sum over the pieces) while bl, bu have the output's shape. CROWN composes them backwards.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Relaxation = tuple[Tensor, Tensor, Tensor, Tensor]


def relu(l: Tensor, u: Tensor, alpha: Tensor | None = None) -> Relaxation:
    """Upper: the chord of the triangle; lower: slope alpha ∈ [0, 1] through 0 (CROWN's adaptive choice, 1 where
    u > −l, when alpha is None)."""
    active, inactive = l >= 0, u <= 0
    unstable = ~(active | inactive)
    width = (u - l).clamp(min=1e-30)
    su = torch.where(unstable, u / width, active.to(l.dtype))
    bu = torch.where(unstable, -u * l / width, torch.zeros_like(l))
    if alpha is None:
        alpha = (u > -l).to(l.dtype)
    sl = torch.where(unstable, alpha, active.to(l.dtype))
    return sl, torch.zeros_like(l), su, bu


def _s_shaped_upper(f: Callable[[Tensor], Tensor], df: Callable[[Tensor], Tensor], l: Tensor, u: Tensor,
                    iterations: int = 30) -> tuple[Tensor, Tensor]:
    """Upper line of a function convex on z ≤ 0 and concave on z ≥ 0 (sigmoid, tanh) over [l, u]:
    the chord where it lies above (u ≤ 0, or slope ≤ f'(u)); the tangent at the midpoint where l ≥ 0; else a
    tangent at d ∈ [0, u] whose line passes above (l, f(l)), found by bisection keeping that property (so the
    line is sound at every step)."""
    fl, fu = f(l), f(u)
    chord = (fu - fl) / (u - l).clamp(min=1e-30)
    mid = (l + u) / 2
    # the mixed case: bisection for the smallest tangent point d whose line stays above f(l)
    d_lo, d_hi = torch.zeros_like(u), u.clamp(min=0)
    for _ in range(iterations):
        d = (d_lo + d_hi) / 2
        above = f(d) + df(d) * (l - d) >= fl
        d_hi, d_lo = torch.where(above, d, d_hi), torch.where(above, d_lo, d)
    use_chord = (u <= 0) | ((l < 0) & (chord <= df(u)))
    tangent_at = torch.where(l >= 0, mid, d_hi)
    slope = torch.where(use_chord, chord, df(tangent_at))
    icpt = torch.where(use_chord, fl - chord * l, f(tangent_at) - df(tangent_at) * tangent_at)
    flat = (u - l) < 1e-9  # a point interval: the constant f(u) is an upper bound (f increasing)
    return torch.where(flat, torch.zeros_like(slope), slope), torch.where(flat, fu, icpt)


def s_shaped(f: Callable[[Tensor], Tensor], df: Callable[[Tensor], Tensor], l: Tensor, u: Tensor) -> Relaxation:
    """Sigmoid and tanh: upper line as above; the lower line by the same rule applied to −f(−z), which is again
    convex-then-concave (−σ(−z) = σ(z) − 1, −tanh(−z) = tanh(z))."""
    su, bu = _s_shaped_upper(f, df, l, u)
    g, dg = (lambda z: -f(-z)), (lambda z: df(-z))
    s, b = _s_shaped_upper(g, dg, -u, -l)  # −f(−z') ≤ s z' + b  ⇒  f(z) ≥ s z − b
    return s, -b, su, bu


def sigmoid(l: Tensor, u: Tensor) -> Relaxation:
    return s_shaped(torch.sigmoid, lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z)), l, u)


def tanh(l: Tensor, u: Tensor) -> Relaxation:
    return s_shaped(torch.tanh, lambda z: 1 - torch.tanh(z) ** 2, l, u)


def max_pieces(l: Tensor, u: Tensor) -> Relaxation:
    """max over the last axis: lower, the piece with the largest lower bound (y ≥ z_j); upper, that piece
    exactly where it dominates every other piece's upper bound, else the constant max_i u_i."""
    j = l.argmax(dim=-1, keepdim=True)
    pick = torch.zeros_like(l).scatter_(-1, j, 1.0)
    lj = l.gather(-1, j).squeeze(-1)
    others = u.masked_fill(pick.bool(), -torch.inf).amax(dim=-1)
    dominant = lj >= others
    zero = torch.zeros_like(lj)
    su = torch.where(dominant[..., None], pick, torch.zeros_like(pick))
    bu = torch.where(dominant, zero, u.amax(dim=-1))
    return pick, zero, su, bu
