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

    def min_linear(self, a: Tensor) -> Tensor:
        """a [N, S, *shape] -> [N, S]: a lower bound of min over the set of a·x'."""
        lo, hi = self.box()
        a = a.flatten(2)
        mid, rad = ((lo + hi) / 2).flatten(1)[:, :, None], ((hi - lo) / 2).flatten(1)[:, :, None]
        # A⁺·lo + A⁻·hi = A·mid − |A|·rad, as batched matrix products (no [N, S, D] temporaries but |A|)
        box = (a @ mid - a.abs() @ rad)[..., 0]
        if self.norm == "linf":
            return box
        centre = (a @ self.x.flatten(1)[:, :, None])[..., 0]
        dual = a.norm(dim=-1) if self.norm == "l2" else a.abs().amax(dim=-1)  # the dual norm of the ball's
        return torch.maximum(box, centre - self.eps[:, None] * dual)
