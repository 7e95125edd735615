"""One exact program on its solver: HiGHS for the L∞ / L1 MILP, SCIP for the L2 program (a convex quadratic distance),
and what each proved: its status, its best point, and its dual bound converted to a proven lower bound of the
distance (for SCIP, net of the feasibility tolerance its quadratic constraint is held to).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .milp import Encoding, Program, scip_start, solution_input, start

HIGHS_ABS_GAP = 1e-6  # HiGHS prunes a node within max(1e-6, rel_gap·value) of the incumbent
SCIP_FEASTOL = 1e-6  # SCIP's default, on the scaled constraint ‖x' − x‖² / scale² ≤ t (1e-9 is 3× slower on MNIST)
SCIP_ABS_GAP = 1e-10  # on t


@dataclass
class Solve:
    """What a solver proved about one program: status "optimal" (to the relative gap), "infeasible" or "limit";
    dual (a proven lower bound of the distance, nan if none) and found (the input of its best point, or None).
    abs_gap: the absolute slack, in distance units, of "optimal" beyond the relative gap."""

    status: str
    dual: float
    found: Tensor | None
    abs_gap: float


def solve_highs(prog: Program, enc: Encoding, cost: np.ndarray, start_at: np.ndarray | None, shape: tuple,
                time_limit: float, rel_gap: float) -> Solve:
    """The L∞ or L1 MILP (minimise cost, the distance) on HiGHS, one thread."""
    h = prog.highs(cost)
    h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("mip_rel_gap", rel_gap)
    h.setOptionValue("mip_abs_gap", 1e-7)
    if start_at is not None:
        start(h, start_at)
    h.run()
    status = h.modelStatusToString(h.getModelStatus())
    info = h.getInfo()
    found = solution_input(h, enc, shape) if info.primal_solution_status == 2 else None
    dual = float(info.mip_dual_bound) if math.isfinite(info.mip_dual_bound) else math.nan
    kind = {"Optimal": "optimal", "Infeasible": "infeasible"}.get(status, "limit")
    return Solve(kind, dual, found, HIGHS_ABS_GAP)


def solve_scip(prog: Program, enc: Encoding, x: Tensor, radius: float, scale: float, start_at: np.ndarray | None,
               time_limit: float, rel_gap: float) -> Solve:
    """The L2 program: minimise t subject to t ≥ ‖x' − x‖² / scale², a convex quadratic constraint (SCIP
    linearises it by outer approximation inside its branch and bound), (radius / scale)² ≤ t ≤ 1. scale: the
    incumbent's distance (or the box's diameter), so that t ≤ 1 and SCIP's absolute feasibility tolerance is
    relative to the distances at stake. The dual bound is returned as scale·√(t_dual − feastol): a point may
    exceed the constraint by feastol, so that much of the dual bound is not proven."""
    import pyscipopt

    model, cols = prog.scip(np.zeros(prog.n_cols))
    x0 = x.double().numpy().ravel()
    lo_t = min((radius / scale) ** 2, 1.0)
    t = model.addVar(lb=lo_t, ub=1.0 + 1e-9, obj=1.0)
    inv = 1.0 / scale
    model.addCons(pyscipopt.quicksum(((cols[c] - float(v)) * inv) ** 2 for c, v in zip(enc.x, x0)) <= t)
    model.setParam("limits/time", float(time_limit))
    model.setParam("limits/gap", rel_gap)
    model.setParam("limits/absgap", SCIP_ABS_GAP)
    model.setParam("numerics/feastol", SCIP_FEASTOL)
    if start_at is not None:
        sq = float(((start_at[enc.x] - x0) ** 2).sum()) * inv * inv
        scip_start(model, [*cols, t], np.r_[start_at, min(max(sq, lo_t), 1.0 + 1e-9)])
    model.optimize()
    status = model.getStatus()
    found = None
    if model.getNSols() > 0:
        best = model.getBestSol()
        found = torch.tensor([model.getSolVal(best, cols[c]) for c in enc.x], dtype=torch.float64).reshape(x.shape)
    dual = model.getDualbound()
    dual = scale * math.sqrt(max(dual - SCIP_FEASTOL, 0.0)) if math.isfinite(dual) and abs(dual) < 1e19 else math.nan
    kind = "optimal" if status in ("optimal", "gaplimit") else "infeasible" if status == "infeasible" else "limit"
    return Solve(kind, dual, found, scale * math.sqrt(SCIP_ABS_GAP + 2 * SCIP_FEASTOL))
