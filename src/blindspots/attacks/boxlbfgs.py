"""Batched box-constrained L-BFGS in which every sample is its own, independent problem.

Each row of x [N, D] has its own curvature history, its own projected Armijo line search, its own
convergence test and its own free-variable set; a row's trajectory does not depend on which rows share
the batch (up to float round-off in the caller's objective). This is not one L-BFGS over the flattened
batch, which would couple the samples through shared step sizes and curvature pairs.

As in L-BFGS-B, a variable at a bound whose gradient points out of the box is held fixed for the step,
so the direction −H·g restricted to the free variables is a descent direction, and the curvature pairs
keep y on the step's free variables (so H models the free block, as L-BFGS-B's reduced Hessian does).
The stopping tests are those of scipy's L-BFGS-B: projected-gradient ∞-norm <= gtol, relative
decrease <= ftol, max_iter.

Each pass makes one objective call on the whole working set, in which every row evaluates its own
pending point: the start of a solve, the first trial along a new direction, or its next backtracked
trial. Line searches thus run asynchronously, and no pass waits on the slowest row.

A row whose solve has stopped can be handed back to the caller (`on_converged`, in groups), which may
change its objective (e.g. the attack's c) and ask for a fresh solve from x0 in the same slot. With
`working_set` < N only that many rows are in flight; a row finished for good hands its slot to the
next one, so the per-pass vectors stay small enough for the CPU's cache. The direction (two-loop
recursion) runs in a small C kernel where one can be built (attacks.native), else in torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from . import native

# objective(x_rows [n, D], rows [n]) -> (f [n], grad [n, D]); `rows` index the original batch.
Objective = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
# on_converged(rows [k], x [k, D], iterations [k]) -> BoolTensor [k]: solve these rows again from x0.
OnConverged = Callable[[Tensor, Tensor, Tensor], Tensor]

ARMIJO_C1 = 1e-4


@dataclass
class BoxLBFGSResult:
    x: Tensor  # [N, D] solution of each row's last solve
    f: Tensor  # [N] objective there
    iterations: Tensor  # [N] accepted steps, over all solves of the row
    evaluations: Tensor  # [N] objective evaluations, over all solves of the row


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise dot products a·b [n]."""
    return torch.linalg.vecdot(a, b)


def store_pairs(S: Tensor, Y: Tensor, rho: Tensor, newest: Tensor, s: Tensor, y: Tensor, sy: Tensor,
                store: Tensor) -> None:
    """Where `store`: advance that row's own ring pointer newest [n] and put (s, y, 1/sᵀy) in its slot, in
    place. A row that stores nothing keeps all of its pairs (each row owns its history ring)."""
    rows = store.nonzero().squeeze(1)
    if rows.numel() == 0:
        return
    slot = (newest[rows] + 1) % S.shape[0]
    newest[rows] = slot
    S[slot, rows] = s[rows]
    Y[slot, rows] = y[rows]
    rho[slot, rows] = sy[rows].reciprocal()


def _two_loop(q: Tensor, S: Tensor, Y: Tensor, rho: Tensor, gamma: Tensor, newest: Tensor) -> Tensor:
    """H·q for every row at once, in place on q, each row's pairs from its newest (newest [n]) back; slots
    with rho == 0 are empty and contribute nothing."""
    m, n = S.shape[:2]
    cols = torch.arange(n, device=q.device)
    slots = [(newest - k) % m for k in range(m)]
    pairs = [(S[j, cols], Y[j, cols], rho[j, cols]) for j in slots]
    alphas = []
    for s_k, y_k, rho_k in pairs:
        a = _rowdot(s_k, q).mul_(rho_k)
        q.addcmul_(y_k, a.unsqueeze(1), value=-1)
        alphas.append(a)
    q.mul_(gamma.unsqueeze(1))
    for (s_k, y_k, rho_k), a in zip(reversed(pairs), reversed(alphas)):
        b = _rowdot(y_k, q).mul_(rho_k)
        q.addcmul_(s_k, a.sub_(b).unsqueeze(1))
    return q


def _direction(d: Tensor, free: Tensor, g: Tensor, free_new: Tensor, S: Tensor, Y: Tensor, rho: Tensor,
               gamma: Tensor, newest: Tensor, need: Tensor) -> tuple[Tensor, Tensor]:
    """Where `need`: d = −free_new ⊙ H(free_new ⊙ g) and free = free_new, in place; returns the slope g·d
    and ‖d‖ [n]. The native kernel when it is available (same numbers to float round-off), else torch."""
    out = native.direction(d, free, g, free_new, S, Y, rho, gamma, newest, need)
    if out is not None:
        return out
    d_new = _two_loop(torch.mul(g, free_new), S, Y, rho, gamma, newest).mul_(free_new).neg_()
    need_col = need.unsqueeze(1).to(d.dtype)
    d.lerp_(d_new, need_col)
    free.lerp_(free_new, need_col)
    return _rowdot(g, d_new), d_new.norm(dim=1)


def minimize_box_lbfgs(objective: Objective, x0: Tensor, lower: float = 0.0, upper: float = 1.0, *,
                       history: int = 10, max_iter: int = 100, gtol: float = 1e-5, ftol: float = 1e-6,
                       max_linesearch: int = 20, compact_fraction: float = 0.2, working_set: int | None = None,
                       on_converged: OnConverged | None = None) -> BoxLBFGSResult:
    """Minimise objective row by row over the box [lower, upper]^D, starting from x0 [N, D].

    objective(x_rows, rows) -> (f [n], grad [n, D]) is called once per pass with the working set's rows
    (`rows` index x0, and stay the same tensor object while the working set does not change).
    working_set: rows in flight at once (default all N)."""
    n_all, dim = x0.shape
    device, dtype = x0.device, x0.dtype
    start = x0.clamp(lower, upper)
    if n_all == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return BoxLBFGSResult(start.clone(), torch.zeros(0, device=device, dtype=dtype), empty, empty.clone())
    out_x, out_f = start.clone(), torch.full((n_all,), math.nan, device=device, dtype=dtype)
    out_it = torch.zeros(n_all, dtype=torch.long, device=device)
    out_ev = torch.zeros_like(out_it)
    eps = torch.finfo(dtype).eps
    n_ws = n_all if working_set is None else max(1, min(int(working_set), n_all))
    buffer = torch.empty(n_ws, dim, device=device, dtype=dtype)

    ids = torch.arange(n_ws, device=device)  # slot -> row of x0; rows n_ws.. wait in the queue
    queued = n_ws  # next row of x0 to enter the working set
    x = start[:n_ws].clone()
    f = torch.full((n_ws,), math.inf, device=device, dtype=dtype)  # objective at x (inf: not evaluated)
    g = torch.zeros_like(x)
    d = torch.zeros_like(x)  # search direction (0 while a fresh start is pending)
    alpha = torch.zeros(n_ws, device=device, dtype=dtype)  # step of the pending trial
    fresh = torch.ones(n_ws, dtype=torch.bool, device=device)  # pending point is a solve's start: accept it
    searching = torch.zeros_like(fresh)  # pending point is a backtracked trial of the current line search
    done = torch.zeros_like(fresh)
    trials = torch.zeros(n_ws, dtype=torch.long, device=device)  # evaluations in the current line search
    evals, iters, solve_iters = (torch.zeros_like(trials) for _ in range(3))
    S = torch.zeros(history, n_ws, dim, device=device, dtype=dtype)
    Y = torch.zeros_like(S)
    rho = torch.zeros(history, n_ws, device=device, dtype=dtype)
    gamma = torch.ones(n_ws, device=device, dtype=dtype)
    newest = torch.full((n_ws,), history - 1, dtype=torch.long, device=device)  # each row's own ring pointer
    free = torch.ones_like(x)  # 1/0 mask of the variables the pending step may move (the direction's free set)

    parked = torch.zeros_like(fresh)  # stopped, not yet handed back (to on_converged, or to the output)
    while True:
        gone = done & ~parked  # finished for good
        n_gone = int(gone.sum())
        if n_gone == x.shape[0]:
            break
        if n_gone and n_gone >= compact_fraction * x.shape[0]:
            out_x[ids[gone]], out_f[ids[gone]] = x[gone], f[gone]
            out_it[ids[gone]], out_ev[ids[gone]] = iters[gone], evals[gone]
            keep = ~gone
            (ids, x, f, g, d, alpha, fresh, searching, trials, evals, iters, solve_iters, gamma, free, parked,
             newest) = (t[keep] for t in (ids, x, f, g, d, alpha, fresh, searching, trials, evals, iters, solve_iters,
                                          gamma, free, parked, newest))
            S, Y, rho = S[:, keep], Y[:, keep], rho[:, keep]
            done = done[keep]
        live = ~done
        buf = buffer[: x.shape[0]]

        # every live row evaluates its pending point (rows done for good evaluate junk, ignored, until
        # compacted away). Masks over [n, D] are float multipliers: bool where() is ~10x slower on CPU.
        trial = torch.addcmul(x, d, alpha.unsqueeze(1)).clamp_(lower, upper)
        f_t, g_t = objective(trial, ids)
        live_n = live.long()
        evals += live_n
        s = torch.sub(trial, x)
        decrease = _rowdot(g, s)
        finite = torch.isfinite(f_t)
        ok = fresh | (finite & (f_t <= f + ARMIJO_C1 * decrease))
        accept = live & ok
        step = accept & ~fresh

        # rejected: backtrack to the minimiser of the quadratic through f, the predicted change and f_t,
        # kept within [0.1, 0.5] of the step (0.1 if f_t is not finite); give up after max_linesearch trials
        reject = live & ~ok
        trials += live_n
        excess = f_t - f - decrease
        shrink = (-decrease / (2 * excess)).nan_to_num(0.5).clamp(0.1, 0.5)
        shrink = torch.where(finite & (excess > 0), shrink, torch.full_like(shrink, 0.1))
        alpha = torch.where(reject, alpha * shrink, alpha)
        failed = reject & (trials >= max_linesearch)  # no acceptable step: stay put, stop (as L-BFGS-B does)
        searching = reject & ~failed

        # accepted steps: store the curvature pair, then move
        # y is kept on the step's free variables only: s is zero on the held ones, and their gradient change
        # would otherwise leak into H's estimate of the free block (measured: ~30% more steps per solve,
        # against scipy's L-BFGS-B which works with the reduced Hessian of the free variables)
        y = g_t.sub_(g)
        y_free = torch.mul(y, free)
        sy, yy = _rowdot(s, y_free), _rowdot(y_free, y_free)
        curv = step & (sy > eps * yy) & (sy > 0)
        store_pairs(S, Y, rho, newest, s, y_free, sy, curv)
        gamma = torch.where(curv, sy / yy, gamma)
        scale = torch.maximum(f.abs(), f_t.abs()).clamp_(min=1)
        small_decrease = step & ((f - f_t) <= scale.mul_(ftol))
        acc_col = accept.unsqueeze(1)
        x = torch.where(acc_col, trial, x)  # exact (x + s could leave the box by an ulp)
        g.addcmul_(y, acc_col.to(dtype))  # g + (g_t - g)
        f = torch.where(accept, f_t, f)
        step_n = step.long()
        iters += step_n
        solve_iters += step_n
        fresh = fresh & ~accept

        # projected gradient x − clip(x − g): its ∞-norm is the stationarity test, and where it is 0 the
        # variable is held fixed for the next step (L-BFGS-B's rule: at a bound, gradient pointing outwards)
        pg = torch.sub(x, g, out=buf).clamp_(lower, upper)
        pg = torch.sub(x, pg).abs_()
        stationary = pg.amax(dim=1) <= gtol
        ended = failed | (accept & (small_decrease | stationary | (solve_iters >= max_iter)))
        done |= ended
        parked |= ended

        # stopped solves are handed back in groups (a hand-back costs about a pass's worth of fixed work):
        # a parked row idles until the parked rows are an eighth of the unfinished ones, or nothing else runs
        n_parked = int(parked.sum())
        if n_parked and (8 * n_parked >= int((~done).sum()) + n_parked or bool(done.all())):
            rows = parked.nonzero().squeeze(1)
            parked[rows] = False
            if on_converged is not None:  # the caller may ask for a fresh solve in the same slot
                again = on_converged(ids[rows], x[rows], solve_iters[rows])
                rows, restart = rows[~again], rows[again]
            else:
                restart = rows[:0]
            if rows.numel() and queued < n_all:  # finished for good: hand the slot to the next queued row
                k = min(rows.numel(), n_all - queued)
                rows, refill = rows[k:], rows[:k]
                fin = ids[refill]
                out_x[fin], out_f[fin], out_it[fin], out_ev[fin] = x[refill], f[refill], iters[refill], evals[refill]
                ids = ids.index_put((refill,), torch.arange(queued, queued + k, device=device))  # new object
                queued += k
                iters[refill], evals[refill] = 0, 0
                restart = torch.cat([restart, refill])
            if restart.numel():  # a fresh solve from x0 (the caller's new objective, or a new row)
                x[restart] = start[ids[restart]]
                d[restart], alpha[restart], f[restart] = 0, 0, math.inf
                fresh[restart], searching[restart], done[restart] = True, False, False
                solve_iters[restart] = 0
                rho[:, restart], gamma[restart] = 0, 1

        # a new direction for every live row that has just moved (or is starting its first step)
        need = ~done & ~fresh & ~searching
        if bool(need.any()):
            free_new = pg.sign_()  # 1 where the variable is free, 0 where it is held at its bound
            slope, dnorm = _direction(d, free, g, free_new, S, Y, rho, gamma, newest, need)
            not_descent = need & ~(slope < 0)
            if bool(not_descent.any()):  # numerical loss of positive definiteness: restart that row's memory
                rows = not_descent.nonzero().squeeze(1)
                d[rows] = torch.mul(g[rows], free_new[rows]).neg_()
                dnorm[rows] = d[rows].norm(dim=1)
                rho[:, rows] = 0
                gamma[rows] = 1
            has_memory = (rho != 0).any(dim=0)
            first = (1 / dnorm.clamp(min=eps)).clamp(max=1)
            alpha = torch.where(need, torch.where(has_memory, torch.ones_like(alpha), first), alpha)
            trials = torch.where(need, 0, trials)

    out_x[ids], out_f[ids], out_it[ids], out_ev[ids] = x, f, iters, evals
    return BoxLBFGSResult(out_x, out_f, out_it, out_ev)
