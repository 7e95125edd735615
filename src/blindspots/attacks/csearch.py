"""The search over the penalty weight c shared by the minimal attacks that solve
minimise c·‖r‖₂² + loss(x + r) for a sequence of c (Szegedy et al.'s L-BFGS, Carlini & Wagner's L2).

A larger c weights ‖r‖ more and gives a smaller r. Per sample: start at c_init; multiply by
BRACKET_FACTOR while the solution succeeds, divide while it fails, until a success/failure pair brackets
the boundary (at most `bracket_steps` moves); then bisect in log space `search_steps` times. The
smallest verified success over the whole search is kept. (Carlini & Wagner weight the loss instead,
‖r‖² + c'·loss: c' = 1/c, so their "smallest c' that succeeds" is the largest c here.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

BRACKET_FACTOR = 10.0


class CSearch:
    """Per-sample bracket-then-bisect schedule over c, and the smallest verified success so far.

    `c[i]` is the next c to try for sample i; `record` takes the outcome of a solve and says which
    samples are finished. Both backends drive the same object, so their c schedules are identical.
    """

    def __init__(self, x0: Tensor, todo: Tensor, *, c_init: float, search_steps: int, bracket_steps: int,
                 bar: tqdm | None = None) -> None:
        n, dev = x0.shape[0], x0.device
        f64 = {"dtype": torch.float64, "device": dev}
        self.x0, self.search_steps, self.bracket_steps, self.bar = x0, search_steps, bracket_steps, bar
        self.todo = todo.clone()
        self.c = torch.full((n,), float(c_init), **f64)
        self.c_succ = torch.zeros(n, **f64)  # largest c that succeeded (0: none yet)
        self.c_fail = torch.full((n,), math.inf, **f64)  # smallest c that failed
        self.bisections = torch.zeros(n, dtype=torch.long, device=dev)
        self.brackets = torch.zeros_like(self.bisections)
        self.solves = torch.zeros_like(self.bisections)
        self.iterations = torch.zeros_like(self.bisections)
        self.best_x = x0.clone()
        self.best_d = torch.full((n,), math.inf, **f64)
        self.best_c = torch.full((n,), math.nan, **f64)

    def record(self, rows: Tensor, xs: Tensor, ok: Tensor, iterations: Tensor) -> Tensor:
        """Outcome of solving rows at c[rows]: solutions xs, verified success ok. Returns finished [k]."""
        c = self.c[rows]
        was_bracketed = (self.c_succ[rows] > 0) & torch.isfinite(self.c_fail[rows])
        self.iterations[rows] += iterations
        self.solves[rows] += 1
        dist = (xs - self.x0[rows]).double().norm(dim=1)
        better = ok & (dist < self.best_d[rows])
        self.best_x[rows[better]] = xs[better]
        self.best_d[rows[better]] = dist[better]
        self.best_c[rows[better]] = c[better]
        c_succ = torch.where(ok, torch.maximum(self.c_succ[rows], c), self.c_succ[rows])
        c_fail = torch.where(ok, self.c_fail[rows], torch.minimum(self.c_fail[rows], c))
        self.c_succ[rows], self.c_fail[rows] = c_succ, c_fail
        self.bisections[rows] += was_bracketed.long()
        bracketed = (c_succ > 0) & torch.isfinite(c_fail)
        self.brackets[rows] += (~bracketed).long()
        finished = torch.where(bracketed, self.bisections[rows] >= self.search_steps,
                               self.brackets[rows] > self.bracket_steps)
        self.c[rows] = torch.where(bracketed, (c_succ * c_fail).sqrt(),
                                   torch.where(ok, c * BRACKET_FACTOR, c / BRACKET_FACTOR))
        never = ~ok & (c_succ == 0)  # a sample that never succeeds keeps its smallest-c attempt
        self.best_x[rows[never]] = xs[never]
        self.todo[rows[finished]] = False
        if self.bar is not None:
            self.bar.update(int(finished.sum()))
        return finished

    def outputs(self) -> dict[str, Tensor]:
        return {"x_adv": self.best_x, "c": self.best_c, "iterations": self.iterations, "solves": self.solves}
