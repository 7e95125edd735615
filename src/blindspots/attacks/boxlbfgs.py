"""Batched box-constrained L-BFGS in which every sample is its own, independent problem.

Each row of x [N, D] has its own curvature history, its own projected Armijo line search, its own
convergence test and its own free-variable set; a row's trajectory does not depend on which rows share
the batch (up to float round-off in the caller's objective). This is not one L-BFGS over the flattened
batch, which would couple the samples through shared step sizes and curvature pairs.

As in L-BFGS-B, a variable at a bound whose gradient points out of the box is held fixed for the step,
so the direction −H·g restricted to the free variables is a descent direction. The stopping tests are
those of scipy's L-BFGS-B: projected-gradient ∞-norm <= gtol, relative decrease <= ftol, max_iter.

A row whose solve has stopped can be handed back to the caller (`on_converged`), which may change its
objective (e.g. the attack's c) and ask for a fresh solve from x0 in the same slot: the working set
stays full instead of waiting for the slowest row. Rows that are finished for good are dropped from
the working set in amortised compactions, so the per-iteration work runs on contiguous tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

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


def _rowdot(a: Tensor, b: Tensor, buf: Tensor) -> Tensor:
    """Row-wise dot products a·b [n] through a preallocated product buffer (faster than vecdot on CPU)."""
    return torch.mul(a, b, out=buf[: a.shape[0]]).sum(dim=1)


def _two_loop(q: Tensor, S: Tensor, Y: Tensor, rho: Tensor, gamma: Tensor, newest: int, buf: Tensor) -> Tensor:
    """H·q for every row at once, in place on q; slots with rho == 0 are empty and contribute nothing."""
    m = S.shape[0]
    order = [(newest - k) % m for k in range(m)]
    alphas = {}
    for j in order:
        a = rho[j] * _rowdot(S[j], q, buf)
        q.addcmul_(Y[j], a.unsqueeze(1), value=-1)
        alphas[j] = a
    q.mul_(gamma.unsqueeze(1))
    for j in reversed(order):
        b = rho[j] * _rowdot(Y[j], q, buf)
        q.addcmul_(S[j], (alphas[j] - b).unsqueeze(1))
    return q


def _armijo(x: Tensor, f: Tensor, g: Tensor, trial: Tensor, f_trial: Tensor, alpha: Tensor,
            live: Tensor) -> tuple[Tensor, Tensor]:
    """Sufficient decrease along the projected path; returns the next step sizes and the rows still
    searching. A rejected step backtracks to the minimiser of the quadratic through f, the predicted
    change g·(trial − x) and f_trial, kept within [0.1, 0.5] of the step (0.1 if f_trial is not finite)."""
    decrease = torch.linalg.vecdot(g, trial - x)
    finite = torch.isfinite(f_trial)
    ok = finite & (f_trial <= f + ARMIJO_C1 * decrease)
    excess = f_trial - f - decrease
    shrink = (-decrease / (2 * excess)).nan_to_num(0.5).clamp(0.1, 0.5)
    shrink = torch.where(finite & (excess > 0), shrink, torch.full_like(shrink, 0.1))
    pending = live & ~ok
    return torch.where(pending, alpha * shrink, alpha), pending


def minimize_box_lbfgs(objective: Objective, x0: Tensor, lower: float = 0.0, upper: float = 1.0, *,
                       history: int = 10, max_iter: int = 100, gtol: float = 1e-5, ftol: float = 1e-6,
                       max_linesearch: int = 20, compact_fraction: float = 0.2,
                       on_converged: OnConverged | None = None) -> BoxLBFGSResult:
    """Minimise objective row by row over the box [lower, upper]^D, starting from x0 [N, D]."""
    n_all, dim = x0.shape
    device, dtype = x0.device, x0.dtype
    start = x0.clamp(lower, upper)
    out_x, out_f = start.clone(), torch.empty(n_all, device=device, dtype=dtype)
    out_it = torch.zeros(n_all, dtype=torch.long, device=device)
    out_ev = torch.zeros_like(out_it)
    eps = torch.finfo(dtype).eps
    buffer = torch.empty(n_all, dim, device=device, dtype=dtype)

    ids = torch.arange(n_all, device=device)
    x = start.clone()
    f, g = objective(x, ids)
    evals = torch.ones(n_all, dtype=torch.long, device=device)
    iters = torch.zeros_like(evals)
    solve_iters = torch.zeros_like(evals)
    S = torch.zeros(history, n_all, dim, device=device, dtype=dtype)
    Y = torch.zeros_like(S)
    rho = torch.zeros(history, n_all, device=device, dtype=dtype)
    gamma = torch.ones(n_all, device=device, dtype=dtype)
    newest = history - 1
    proj = (x - g).clamp_(lower, upper)
    ended = torch.sub(x, proj).abs_().amax(dim=1) <= gtol  # rows whose current solve just stopped
    done = ended.clone()

    while True:
        if on_converged is not None and bool(ended.any()):
            rows = ended.nonzero().squeeze(1)
            again = rows[on_converged(ids[rows], x[rows], solve_iters[rows])]
            if again.numel():  # fresh solve from x0 with the caller's new objective; forget the history
                x[again] = start[ids[again]]
                f[again], g[again] = objective(x[again], ids[again])
                proj[again] = (x[again] - g[again]).clamp_(lower, upper)
                evals[again] += 1
                solve_iters[again] = 0
                S[:, again], Y[:, again], rho[:, again], gamma[again] = 0, 0, 0, 1
                done[again] = False
        n_done = int(done.sum())
        if n_done == x.shape[0]:
            break
        if n_done and n_done >= compact_fraction * x.shape[0]:
            out_x[ids[done]], out_f[ids[done]] = x[done], f[done]
            out_it[ids[done]], out_ev[ids[done]] = iters[done], evals[done]
            keep = ~done
            ids, x, f, g, proj, iters, solve_iters, evals, gamma = (
                t[keep] for t in (ids, x, f, g, proj, iters, solve_iters, evals, gamma))
            S, Y, rho = S[:, keep], Y[:, keep], rho[:, keep]
            done = done[keep]
        live = ~done
        buf = buffer[: x.shape[0]]

        # L-BFGS-B's rule: a variable at a bound whose gradient points outwards stays fixed this step
        # (there x − clip(x − g) = 0, which is also how the projected gradient test sees it)
        free = proj != x
        d = torch.where(free & live.unsqueeze(1), _two_loop(torch.where(free, g, 0), S, Y, rho, gamma, newest, buf)
                        .neg_(), 0)
        slope = _rowdot(g, d, buf)
        not_descent = live & ~(slope < 0)
        if bool(not_descent.any()):  # numerical loss of positive definiteness: restart that row's memory
            d = torch.where(not_descent.unsqueeze(1), torch.where(free, -g, 0), d)
            rho[:, not_descent] = 0
            gamma[not_descent] = 1
        has_memory = (rho != 0).any(dim=0)
        alpha = torch.where(has_memory, torch.ones_like(gamma),
                            (1 / d.norm(dim=1).clamp(min=eps)).clamp(max=1))

        # projected Armijo search; the first trial runs on the whole working set (frozen rows have d = 0)
        x_new = torch.addcmul(x, d, alpha.unsqueeze(1)).clamp_(lower, upper)
        f_new, g_new = objective(x_new, ids)
        evals += live.long()
        alpha, pending = _armijo(x, f, g, x_new, f_new, alpha, live)
        for _ in range(max_linesearch - 1):
            rows = pending.nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            xr = x[rows]
            trial = torch.addcmul(xr, d[rows], alpha[rows].unsqueeze(1)).clamp_(lower, upper)
            ft, gt = objective(trial, ids[rows])
            evals[rows] += 1
            alpha_r, still = _armijo(xr, f[rows], g[rows], trial, ft, alpha[rows], torch.ones_like(rows, dtype=torch.bool))
            good = ~still
            x_new[rows[good]], f_new[rows[good]], g_new[rows[good]] = trial[good], ft[good], gt[good]
            alpha[rows] = alpha_r
            pending[rows[good]] = False
        failed = pending
        if bool(failed.any()):  # no acceptable step: stay put and stop this solve (as L-BFGS-B does)
            x_new[failed], f_new[failed], g_new[failed] = x[failed], f[failed], g[failed]

        step = live & ~failed
        s, y = x_new.sub(x), g_new.sub(g)
        sy, yy = _rowdot(s, y, buf), y.norm(dim=1).square()
        curv = step & (sy > eps * yy) & (sy > 0)
        newest = (newest + 1) % history
        curv_col = curv.unsqueeze(1).to(dtype)
        torch.mul(s, curv_col, out=S[newest])
        torch.mul(y, curv_col, out=Y[newest])
        rho[newest] = torch.where(curv, 1 / sy.where(curv, torch.ones_like(sy)), 0)
        gamma = torch.where(curv, sy / yy.where(curv, torch.ones_like(yy)), gamma)

        small_decrease = (f - f_new) <= ftol * torch.maximum(torch.maximum(f.abs(), f_new.abs()),
                                                             torch.ones_like(f))
        iters += step.long()
        solve_iters += step.long()
        x, f, g = x_new, f_new, g_new
        proj = (x - g).clamp_(lower, upper)
        stationary = torch.sub(x, proj).abs_().amax(dim=1) <= gtol
        ended = live & (failed | small_decrease | stationary | (solve_iters >= max_iter))
        done |= ended

    out_x[ids], out_f[ids], out_it[ids], out_ev[ids] = x, f, iters, evals
    return BoxLBFGSResult(out_x, out_f, out_it, out_ev)
