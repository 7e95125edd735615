"""Input sets: a norm ball of radius ε (one per image) around x, intersected with the value box.

`box()` is the smallest box holding the set (every L_p ball lies in the L∞ ball of the same radius), used by
interval arithmetic and as the domain of the MILP; `min_linear(a)` is a lower bound of min a·x' over the set,
the last step of CROWN: exact for L∞ ∩ box; for L2 and L1 the larger of the box bound and the ball bound
(each is exact for a superset of the set, so both are sound).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InputError

NORMS = ("linf", "l2", "l1")


@dataclass
class InputSet:
    """{x' : ‖x' − x‖_norm ≤ eps, lo ≤ x' ≤ hi} per image; x [N, *shape], eps [N] (float64)."""

    x: Tensor
    eps: Tensor
    norm: str = "linf"
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise InputError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}.")
        self.x = self.x.double()
        self.eps = torch.as_tensor(self.eps, dtype=torch.float64).expand(self.x.shape[0]).clone()
        if bool((self.eps < 0).any()) or not bool(torch.isfinite(self.eps).all()):
            raise InputError("eps must be finite and ≥ 0.")

    def box(self) -> tuple[Tensor, Tensor]:
        e = self.eps.view(-1, *([1] * (self.x.dim() - 1)))
        return (self.x - e).clamp(min=self.bounds[0]), (self.x + e).clamp(max=self.bounds[1])

    def min_linear(self, a: Tensor, weight: Tensor | None = None) -> Tensor:
        """a [N or 1, S, *shape] -> [N, S]: a lower bound of min over the set of a·x'. With weight [h, D] (a
        Linear on the flattened input), a [N or 1, S, h] holds coefficients of weight·x': the input's coefficients
        a·weight are formed once, and the centre terms go through weight·x' (a small product) instead."""
        lo, hi = self.box()
        mid, rad = ((lo + hi) / 2).flatten(1), ((hi - lo) / 2).flatten(1)
        x = self.x.flatten(1)
        a = a.flatten(2)
        if weight is None:
            full = a
        else:
            full = a @ weight
            mid, x = mid @ weight.T, x @ weight.T
        # A⁺·lo + A⁻·hi = A·mid − |A|·rad, as (batched) matrix products
        magnitude = full.abs_() if weight is not None and not full.requires_grad else full.abs()
        box = _apply(a, mid) - _apply(magnitude, rad)
        if self.norm == "linf":
            return box
        # the dual norm of the ball's (|A| has A's norms)
        dual = magnitude.norm(dim=-1) if self.norm == "l2" else magnitude.amax(dim=-1)
        return torch.maximum(box, _apply(a, x) - self.eps[:, None] * dual)


def _apply(a: Tensor, v: Tensor) -> Tensor:
    """a [N or 1, S, D], v [N, D] -> [N, S]: a·v per image, one matrix product when a is shared (batch 1)."""
    if a.shape[0] == 1 and v.shape[0] != 1:
        return v @ a[0].T
    return (a @ v[:, :, None])[..., 0]
