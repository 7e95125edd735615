"""A solver's adversarial point made exact: the closest input in its own linear region, then a nudge onto the
adversarial side.

A solver's point satisfies its constraints only to a feasibility tolerance (SCIP's quadratic distance, HiGHS's
rows), so its distance and its tie are both slightly off. With the point's activation pattern fixed (each ReLU on
or off, each max unit's winning piece, the winning rival class), the net is affine and the adversarial part of the
region a polyhedron: the closest input in it is a linear program (L∞, L1) or a convex quadratic program (L2),
solved by HiGHS without the certified-radius cut, so that a cut above the truth shows. A nudge along the margin's
gradient then puts the point exactly on the adversarial side, so that its forward pass needs no tie tolerance.
"""

from __future__ import annotations

import math

import highspy
import numpy as np
import torch
from torch import Tensor

from .milp import INF, Program
from .network import Activation, Affine, MaxPieces, Network

NUDGE_STEPS = 8


def margin(net: Network, x: Tensor, y: int) -> float:
    """logit_y − the largest other logit at x (float64): ≤ 0 where x is adversarial (a tie counts)."""
    with torch.no_grad():
        logits = net.module(x[None].double())[0]
    return float(logits[y] - torch.cat([logits[:y], logits[y + 1:]]).max())


def _region(net: Network, point: np.ndarray, y: int) -> tuple[np.ndarray, np.ndarray]:
    """(G [m, n], g [m]): the point's linear region ∩ {its best rival's logit ≥ y's} as G·x + g ≥ 0."""
    a, c = np.eye(len(point)), np.zeros(len(point))
    rows_g, rows_c = [], []
    for op in net.ops:
        if isinstance(op, Affine):
            w, b = (t.numpy() for t in op.dense())
            a, c = w @ a, w @ c + b
        elif isinstance(op, Activation):  # relu (the exact program admits no other activation)
            on = a @ point + c >= 0
            sign = np.where(on, 1.0, -1.0)
            rows_g.append(sign[:, None] * a), rows_c.append(sign * c)
            a, c = a * on[:, None], c * on
        elif isinstance(op, MaxPieces):
            p = op.in_shape[-1]
            a3, c2 = a.reshape(-1, p, a.shape[1]), c.reshape(-1, p)
            k = (a3 @ point + c2).argmax(1)
            units = np.arange(len(k))
            ak, ck = a3[units, k], c2[units, k]
            rows_g.append((ak[:, None] - a3).reshape(-1, a.shape[1])), rows_c.append((ck[:, None] - c2).ravel())
            a, c = ak, ck
    logits = a @ point + c
    j = int(np.argmax(np.where(np.arange(len(logits)) == y, -np.inf, logits)))
    rows_g.append((a[j] - a[y])[None]), rows_c.append(np.array([c[j] - c[y]]))
    return np.concatenate(rows_g), np.concatenate(rows_c)


def polish(net: Network, x: Tensor, y: int, point: Tensor, norm: str, bounds: tuple[float, float]) -> Tensor | None:
    """The closest input to x (in `norm`, within the box) in the point's activation region where the point's best
    rival class reaches y; None where the program fails (e.g. the region does not reach the tie)."""
    x0, p0 = x.double().numpy().ravel(), point.double().numpy().ravel()
    n = len(x0)
    g, c = _region(net, p0, y)
    prog = Program()
    xs = prog.cols(np.full(n, bounds[0]), np.full(n, bounds[1]))
    i = np.arange(n)
    if norm == "linf":
        t = prog.cols(np.zeros(1), np.full(1, INF))
        tt = np.full(n, t[0])
        prog.add_rows(np.r_[i, i], np.r_[xs, tt], np.r_[np.ones(n), -np.ones(n)], np.full(n, -INF), x0)
        prog.add_rows(np.r_[i, i], np.r_[xs, tt], np.r_[np.ones(n), np.ones(n)], x0, np.full(n, INF))
        dist = t
    elif norm == "l1":
        p, q = prog.cols(np.zeros(n), np.full(n, INF)), prog.cols(np.zeros(n), np.full(n, INF))
        prog.add_rows(np.r_[i, i, i], np.r_[xs, p, q], np.r_[np.ones(n), -np.ones(n), np.ones(n)], x0, x0)
        dist = np.r_[p, q]
    else:
        dist = np.zeros(0, dtype=int)
    keep = np.abs(g).max(1) > 0  # a row without x (a unit off everywhere) holds or fails by its constant alone
    if bool((c[~keep] < 0).any()):
        return None
    prog.dense_rows(g[keep], xs, [], -c[keep], np.full(int(keep.sum()), INF))
    cost = np.zeros(prog.n_cols)
    cost[dist] = 1.0
    if norm == "l2":  # ‖x' − x‖² = x'·x' − 2 x·x' + const: Hessian 2I, linear cost −2x
        cost[xs] = -2 * x0
    h = prog.highs(cost)
    if norm == "l2":
        h.passHessian(prog.n_cols, n, 1, np.arange(n + 1, dtype=np.int32), np.arange(n, dtype=np.int32),
                      np.full(n, 2.0))
    h.setOptionValue("time_limit", 10.0)
    h.setOptionValue("primal_feasibility_tolerance", 1e-9)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    out = torch.tensor(np.asarray(h.getSolution().col_value)[xs], dtype=torch.float64).reshape(x.shape)
    return out.clamp(*bounds)


def nudge(net: Network, x: Tensor, y: int, point: Tensor, norm: str, bounds: tuple[float, float]) -> Tensor:
    """The point moved, by the smallest step in `norm` along the local linearisation of its margin, until its
    forward pass is adversarial (margin ≤ 0), at most NUDGE_STEPS times; the point itself where it already is or
    the steps fail. A solver's point sits within its tolerance (~1e-7 logits) of the tie: the step is that small."""
    cand = point.double().clone()
    for _ in range(NUDGE_STEPS):
        m = margin(net, cand, y)
        if m <= 0:
            return cand
        z = cand.clone().requires_grad_(True)
        with torch.enable_grad():
            logits = net.module(z[None])[0]
            j = int(torch.cat([logits[:y], torch.full((1,), -math.inf), logits[y + 1:]]).argmax())
            (grad,) = torch.autograd.grad(logits[y] - logits[j], z)
        step = m * (1 + 1e-9) + 1e-15 * (1 + float(logits.detach().abs().max()))
        # only coordinates that can move against the gradient (not pinned at the box's side) count
        grad = grad * (((grad > 0) & (cand > bounds[0])) | ((grad < 0) & (cand < bounds[1])))
        if not bool((grad != 0).any()):
            return cand
        if norm == "l2":
            delta = -step * grad / float(grad.pow(2).sum())
        elif norm == "linf":
            delta = -step * grad.sign() / float(grad.abs().sum())
        else:
            k = int(grad.abs().flatten().argmax())
            delta = torch.zeros_like(cand).flatten()
            delta[k] = -step / float(grad.flatten()[k])
            delta = delta.reshape(cand.shape)
        cand = (cand + delta).clamp(*bounds)
    return cand
