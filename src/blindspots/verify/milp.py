"""Solver glue: a piecewise-linear network over an input box as a mixed-integer program for HiGHS (highspy), or
for SCIP (pyscipopt) where the program gains a convex quadratic constraint (the exact minimal L2).

The encoding of Tjeng et al. (MIPVerify, 2019): every nonlinear operation's input z gets columns bounded by the
bounds handed in (CROWN's; tighter bounds mean smaller big-M constants and a faster solve), stable ReLUs are
replaced by z or 0, an unstable one by h ≥ 0, h ≥ z, h ≤ z − l(1 − a), h ≤ u·a with a binary a; a max over pieces
drops the pieces that can never be the maximum and uses one binary per remaining piece. With relax=True the
binaries become continuous in [0, 1]: the LP (triangle) relaxation. Nothing here computes a bound itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import highspy
import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from .network import Activation, Affine, MaxPieces, Network, UnsupportedLayerError

INF = highspy.kHighsInf


@dataclass
class Program:
    """Columns and sparse rows collected in numpy, handed to HiGHS in one passModel."""

    lower: list[np.ndarray] = field(default_factory=list)
    upper: list[np.ndarray] = field(default_factory=list)
    integer: list[np.ndarray] = field(default_factory=list)
    n_cols: int = 0
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # (row, col, value)
    row_lower: list[np.ndarray] = field(default_factory=list)
    row_upper: list[np.ndarray] = field(default_factory=list)
    n_rows: int = 0

    def cols(self, lower: np.ndarray, upper: np.ndarray, integer: bool = False) -> np.ndarray:
        lower, upper = np.asarray(lower, float).ravel(), np.asarray(upper, float).ravel()
        idx = np.arange(self.n_cols, self.n_cols + lower.size)
        self.lower.append(lower), self.upper.append(np.maximum(upper, lower))
        self.integer.append(np.full(lower.size, integer))
        self.n_cols += lower.size
        return idx

    def add_rows(self, row: np.ndarray, col: np.ndarray, value: np.ndarray, lower: np.ndarray, upper: np.ndarray
                 ) -> None:
        """Rows lower ≤ Σ value·x[col] ≤ upper; row holds 0-based indices local to this block."""
        lower, upper = np.asarray(lower, float).ravel(), np.asarray(upper, float).ravel()
        self.rows.append((np.asarray(row) + self.n_rows, np.asarray(col), np.asarray(value, float)))
        self.row_lower.append(lower), self.row_upper.append(upper)
        self.n_rows += lower.size

    def dense_rows(self, w: np.ndarray, cols: np.ndarray, extra: list[tuple[np.ndarray, np.ndarray]],
                   lower: np.ndarray, upper: np.ndarray) -> None:
        """Rows lower ≤ w @ x[cols] + Σ coeff·x[col] (one (col, coeff) pair per row in extra) ≤ upper."""
        r, c = np.nonzero(w)
        rr, cc, vv = [r], [cols[c]], [w[r, c]]
        for col, coeff in extra:
            rr.append(np.arange(len(col))), cc.append(col), vv.append(coeff)
        self.add_rows(np.concatenate(rr), np.concatenate(cc), np.concatenate(vv), lower, upper)

    def highs(self, cost: np.ndarray, relax: bool = False) -> highspy.Highs:
        import scipy.sparse as sp

        row = np.concatenate([r for r, _, _ in self.rows])
        col = np.concatenate([c for _, c, _ in self.rows])
        val = np.concatenate([v for _, _, v in self.rows])
        a = sp.csr_matrix((val, (row, col)), shape=(self.n_rows, self.n_cols))
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = self.n_cols, self.n_rows
        lp.col_cost_ = np.asarray(cost, float)
        lp.col_lower_, lp.col_upper_ = np.concatenate(self.lower), np.concatenate(self.upper)
        lp.row_lower_, lp.row_upper_ = np.concatenate(self.row_lower), np.concatenate(self.row_upper)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = self.n_cols, self.n_rows
        lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = a.indptr, a.indices, a.data
        integer = np.concatenate(self.integer)
        if not relax and integer.any():
            lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                               for i in integer]
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 1)
        h.passModel(lp)
        return h

    def scip(self, cost: np.ndarray) -> tuple[Any, list]:
        """The same program as a SCIP model (pyscipopt), minimising cost·x: (model, its variables by column), so
        that nonlinear constraints can be added to it (HiGHS takes none with integer columns)."""
        try:
            import pyscipopt
        except ImportError:
            raise InputError("the exact minimal L2 needs SCIP through pyscipopt, which is not installed: "
                             "pip install 'pyscipopt>=5' (a dependency of blindspots since issue 18).") from None
        import scipy.sparse as sp

        model = pyscipopt.Model()
        model.hideOutput()
        lower, upper, integer = np.concatenate(self.lower), np.concatenate(self.upper), np.concatenate(self.integer)
        cols = [model.addVar(lb=float(lo), ub=float(hi), vtype="B" if (i and lo >= 0 and hi <= 1) else
                             "I" if i else "C", obj=float(c))
                for lo, hi, i, c in zip(lower, upper, integer, cost)]
        a = sp.csr_matrix((np.concatenate([v for _, _, v in self.rows]),
                           (np.concatenate([r for r, _, _ in self.rows]), np.concatenate([c for _, c, _ in self.rows]))),
                          shape=(self.n_rows, self.n_cols))
        row_lower, row_upper = np.concatenate(self.row_lower), np.concatenate(self.row_upper)
        for r in range(self.n_rows):
            lo_r, hi_r = row_lower[r], row_upper[r]
            terms = pyscipopt.quicksum(float(v) * cols[c] for c, v in zip(a.indices[a.indptr[r]:a.indptr[r + 1]],
                                                                          a.data[a.indptr[r]:a.indptr[r + 1]]))
            model.addCons(pyscipopt.ExprCons(terms, lhs=None if lo_r <= -INF else float(lo_r),
                                             rhs=None if hi_r >= INF else float(hi_r)))
        model.setMinimize()
        return model, cols


@dataclass
class Encoding:
    """Where the network lives in a Program: input columns, the last hidden block's columns, the output affine
    map (W [C, d], b [C]) on them, and the steps that fill every column from an input (for a MIP start)."""

    x: np.ndarray
    hidden: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    steps: list[tuple] = field(default_factory=list)

    def assignment(self, x: np.ndarray, n_cols: int) -> np.ndarray:
        """Every column's value when the network runs on x (flattened)."""
        v = np.zeros(n_cols)
        v[self.x] = x.ravel()
        for kind, *args in self.steps:
            if kind == "affine":
                z, w, b, src = args
                v[z] = w @ v[src] + b
            elif kind == "relu":
                z, h, a, unstable = args
                v[h] = np.maximum(v[z], 0)
                v[a] = (v[z[unstable]] > 0).astype(float)
            else:
                z, y, a, keep = args  # z: [units, p] columns; keep: [units, p] candidate mask; a: per kept piece
                vals = np.where(keep, v[z], -np.inf)
                v[y] = vals.max(axis=1)
                choice = np.zeros_like(keep, dtype=float)
                choice[np.arange(len(y)), vals.argmax(axis=1)] = 1.0
                v[a] = choice[keep & (keep.sum(1, keepdims=True) > 1)]
        return v


def _relu(prog: Program, z: np.ndarray, l: np.ndarray, u: np.ndarray, enc: Encoding) -> np.ndarray:
    active, inactive = l >= 0, u <= 0
    unstable = ~(active | inactive)
    h = prog.cols(np.zeros(len(z)), np.maximum(u, 0))  # an inactive unit's column is fixed to 0 by its bounds
    h[active] = z[active]  # h = z: reuse the column (the fresh one stays unused)
    k = int(unstable.sum())
    a = prog.cols(np.zeros(k), np.ones(k), integer=True)
    hu, zu, lu, uu = h[unstable], z[unstable], l[unstable], u[unstable]
    i = np.arange(k)
    # h − z ≥ 0;  h − z − l·a ≤ −l;  h − u·a ≤ 0
    prog.add_rows(np.r_[i, i], np.r_[hu, zu], np.r_[np.ones(k), -np.ones(k)], np.zeros(k), np.full(k, INF))
    prog.add_rows(np.r_[i, i, i], np.r_[hu, zu, a], np.r_[np.ones(k), -np.ones(k), -lu], np.full(k, -INF), -lu)
    prog.add_rows(np.r_[i, i], np.r_[hu, a], np.r_[np.ones(k), -uu], np.full(k, -INF), np.zeros(k))
    enc.steps.append(("relu", z, h, a, unstable))
    return h


def _max_pieces(prog: Program, z: np.ndarray, l: np.ndarray, u: np.ndarray, enc: Encoding) -> np.ndarray:
    """z, l, u: [units, p]. Pieces whose upper bound is below another's lower bound are dropped."""
    units, p = z.shape
    keep = u >= l.max(axis=1, keepdims=True)
    top = np.where(keep, u, -np.inf).max(axis=1)
    y = prog.cols(l.max(axis=1), top)
    many = keep.sum(1) > 1
    only = np.where(~many)[0]
    if len(only):  # a single candidate: y = z_j
        j = keep[only].argmax(1)
        prog.add_rows(np.r_[np.arange(len(only)), np.arange(len(only))], np.r_[y[only], z[only, j]],
                      np.r_[np.ones(len(only)), -np.ones(len(only))], np.zeros(len(only)), np.zeros(len(only)))
    sel = keep & many[:, None]
    m = int(sel.sum())
    a = prog.cols(np.zeros(m), np.ones(m), integer=True)
    unit, piece = np.nonzero(sel)
    i = np.arange(m)
    big = top[unit] - l[unit, piece]
    # y − z_j ≥ 0;  y − z_j + M_j·a_j ≤ M_j;  Σ_j a_j = 1 per unit
    prog.add_rows(np.r_[i, i], np.r_[y[unit], z[unit, piece]], np.r_[np.ones(m), -np.ones(m)], np.zeros(m),
                  np.full(m, INF))
    prog.add_rows(np.r_[i, i, i], np.r_[y[unit], z[unit, piece], a], np.r_[np.ones(m), -np.ones(m), big],
                  np.full(m, -INF), big)
    multi = np.where(many)[0]
    rank = np.searchsorted(multi, unit)
    prog.add_rows(rank, a, np.ones(m), np.ones(len(multi)), np.ones(len(multi)))
    enc.steps.append(("max", z, y, a, keep))
    return y


def encode(prog: Program, net: Network, bounds: list[tuple[Tensor, Tensor] | None], lo: Tensor, hi: Tensor
           ) -> Encoding:
    """The network of one image over the box [lo, hi]; bounds[k]: op k's input bounds (one image, [*shape])."""
    x = prog.cols(lo.numpy().ravel(), hi.numpy().ravel())
    enc = Encoding(x, x, np.eye(len(x)), np.zeros(len(x)))
    cur = x
    w, b = np.eye(len(x)), np.zeros(len(x))
    for k, op in enumerate(net.ops):
        if isinstance(op, Affine):
            wk, bk = (t.numpy() for t in op.dense())
            w, b = wk @ w, wk @ b + bk
            continue
        if isinstance(op, Activation) and op.kind != "relu":
            raise UnsupportedLayerError(f"the exact minimal perturbation needs a piecewise-linear net; layer "
                                        f"'{op.name}' ({op.kind}) is not. Use certified bounds for it.")
        l, u = (t.numpy().ravel() for t in bounds[k])  # type: ignore[union-attr]
        z = prog.cols(l, u)
        prog.dense_rows(w, cur, [(z, -np.ones(len(z)))], -b, -b)  # W·cur − z = −b
        enc.steps.append(("affine", z, w, b, cur))
        if isinstance(op, MaxPieces):
            p = op.in_shape[-1]
            cur = _max_pieces(prog, z.reshape(-1, p), l.reshape(-1, p), u.reshape(-1, p), enc)
        else:
            cur = _relu(prog, z, l, u, enc)
        w, b = np.eye(len(cur)), np.zeros(len(cur))
    enc.hidden, enc.out_w, enc.out_b = cur, w, b
    return enc


def solution_input(h: highspy.Highs, enc: Encoding, shape: tuple[int, ...]) -> Tensor:
    return torch.tensor(np.asarray(h.getSolution().col_value)[enc.x], dtype=torch.float64).reshape(shape)


def start(h: highspy.Highs, values: np.ndarray) -> None:
    """Hand HiGHS a feasible point (a MIP start): an attack's adversarial example as the incumbent."""
    sol = highspy.HighsSolution()
    sol.col_value = values.tolist()
    h.setSolution(sol)


def scip_start(model: Any, cols: list, values: np.ndarray) -> bool:
    """Hand SCIP a feasible point (its values by variable); False where SCIP rejected it (e.g. by tolerance)."""
    sol = model.createSol()
    for var, value in zip(cols, values):
        model.setSolVal(sol, var, float(value))
    return bool(model.addSol(sol, free=True))
