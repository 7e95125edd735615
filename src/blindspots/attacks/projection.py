"""Exact Euclidean projection onto a half-space intersected with the box [lo, hi]^D, row by row.

For each row: argmin_p ‖p − x‖₂ subject to g·p ≤ c and lo ≤ p ≤ hi. The minimiser is
p(λ) = clip(x − λ·g, lo, hi) for the smallest λ ≥ 0 with g·p(λ) ≤ c; g·p(λ) is piecewise linear in λ
with one breakpoint per coordinate (where it reaches its bound), so sorting the breakpoints gives λ in
closed form (no bisection, no tolerance). This is the step a boundary attack takes on the linearised
decision boundary (DeepFool, FAB) with the box respected exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor


def project_halfspace_box(x: Tensor, g: Tensor, c: Tensor, lo: float = 0.0, hi: float = 1.0) -> tuple[Tensor, Tensor]:
    """Rows of x [B, D] projected onto {p : g·p ≤ c, lo ≤ p ≤ hi} (g [B, D], c [B]); x must lie in the box.

    Returns (p [B, D], feasible [B]). Where no point of the box satisfies the constraint, p is the box
    corner that minimises g·p nearest to x (the best the box allows) and feasible is False.
    """
    xd, gd, cd = x.double(), g.double(), c.double()
    need = torch.linalg.vecdot(gd, xd) - cd  # how much g·p must drop
    # coordinate i moves at rate -g_i until it reaches its bound at λ = t_i
    room = torch.where(gd > 0, xd - lo, hi - xd)
    t = torch.where(gd != 0, room / gd.abs(), torch.full_like(xd, 1e300))
    t_sorted, order = t.sort(dim=1)
    g2 = gd.square().gather(1, order)
    reached = torch.cumsum(g2 * torch.where(g2 > 0, t_sorted, 0.0), dim=1)  # Σ_{j<=k} g_j² t_j
    moving = g2.sum(1, keepdim=True) - torch.cumsum(g2, dim=1)  # Σ_{j>k} g_j²
    drop = reached + t_sorted.clamp(max=1e300) * moving  # g·x − g·p(t_k), nondecreasing in k
    drop = torch.where(moving > 0, drop, reached)
    k = torch.searchsorted(drop, need.clamp(min=0).unsqueeze(1)).squeeze(1)  # first breakpoint with drop >= need
    feasible = k < x.shape[1]
    kk = (k - 1).clamp(min=0).unsqueeze(1)
    reached_before = torch.where(k > 0, reached.gather(1, kk).squeeze(1), 0.0)
    moving_before = torch.where(k > 0, moving.gather(1, kk).squeeze(1), g2.sum(1))
    lam = (need - reached_before) / moving_before.clamp(min=1e-300)
    lam = torch.where(need <= 0, 0.0, lam)
    lam = torch.where(feasible, lam, torch.full_like(lam, 1e300))
    p = (xd - lam.unsqueeze(1) * gd).clamp_(lo, hi)
    return p.to(x.dtype), feasible | (need <= 0)
