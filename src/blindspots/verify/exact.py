"""Exact minimal adversarial perturbations of piecewise-linear nets (MILP: HiGHS; L2: SCIP), and the LP relaxation.

Per image: the best adversarial example of the project's attacks (and any the caller hands in) is the incumbent
and its distance ε_ub the upper bound; the program's domain is the ε_ub ball ∩ box, over which CROWN bounds every
unit (the big-M constants) and excludes the target classes whose margin is certified positive. HiGHS then
minimises the L∞ or L1 distance to any input whose logit of another class reaches the label's
(a tie counts as adversarial: the minimum of a closed set). L2 is a mixed-integer program with a convex quadratic
constraint t ≥ ‖x' − x‖² (minimise t), which HiGHS does not take with integer columns: the same program goes
to SCIP (pyscipopt). Within the time limit the value is proven optimal and re-verified by a forward pass; past
it, the solver's proven lower bound and best upper bound come back.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..attacks import Misclassification, attack_mode, fgsm_min_epsilon
from ..attacks.minimal import minimal_l2_attack
from ..attacks.pgd import pgd_linf_per_image
from ..errors import InputError
from . import crown
from .certify import certified_radius
from .inputs import InputSet
from .milp import INF, Encoding, Program, encode, scip_start, solution_input, start
from .network import Activation, Network, UnsupportedLayerError, network

EXACT_NORMS = ("linf", "l1", "l2")
TIE_TOLERANCE = 1e-4  # logit units: a re-verified solution may sit this far on the label's side of a tie
DISTANCE_TOLERANCE = 1e-6


@dataclass
class ExactResult:
    """Per image [N]: value (the exact minimal distortion, to the solver's relative gap; nan where not proven),
    lower and upper (proven bounds; upper = value where proven), status ("optimal", "time_limit", "robust": no adversarial input in the box,
    "clean_error": already misclassified, value 0, "unverified": the solver's point failed the forward-pass
    check), x_adv [N, ...] (the closest adversarial input known; nan where none), solve_time (seconds),
    targets_pruned (classes the bounds excluded before solving)."""

    norm: str
    value: Tensor
    lower: Tensor
    upper: Tensor
    status: list[str]
    x_adv: Tensor
    solve_time: Tensor
    targets_pruned: Tensor


def distance(a: Tensor, b: Tensor, norm: str) -> Tensor:
    d = (a - b).flatten(1).double()
    return d.abs().amax(1) if norm == "linf" else d.abs().sum(1) if norm == "l1" else d.norm(dim=1)


def attack_upper_bounds(model: nn.Module, x: Tensor, y: Tensor, norm: str, *, rounds: int = 12, steps: int = 20,
                        seed: int = 0) -> Tensor:
    """[N, ...] the closest adversarial example per image among FGSM-min, a PGD-L∞ bisection started from it and
    minimal-L2 (nan where none succeeded): the incumbents of the exact search."""
    crit = Misclassification(y)
    found = [fgsm_min_epsilon(model, x, crit).x_adv, minimal_l2_attack(model, x, crit).x_adv]
    with attack_mode(model) as m:
        ok0 = crit.is_adversarial(m(found[0]))
        hi = torch.where(ok0, distance(found[0], x, "linf"), torch.ones(len(x), dtype=torch.float64))
        lo = torch.zeros_like(hi)
        best = found[0].clone()
        gen = torch.Generator().manual_seed(seed)
        for _ in range(rounds):
            mid = (lo + hi) / 2
            adv = pgd_linf_per_image(m, x, crit, mid.float(), steps=steps, gen=gen)
            with torch.no_grad():
                ok = crit.is_adversarial(m(adv))
            best[ok] = adv[ok]
            hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
        found.append(best)
        out = torch.full_like(x, math.nan)
        size = torch.full((len(x),), math.inf, dtype=torch.float64)
        for cand in found:
            with torch.no_grad():
                ok = crit.is_adversarial(m(cand))
            d = torch.where(ok, distance(cand, x, norm), torch.full_like(size, math.inf))
            better = d < size
            out[better], size[better] = cand[better], d[better]
    return out


def _domain(net: Network, x: Tensor, y: int, eps_ub: float, norm: str, bounds: tuple[float, float]):
    """The ε_ub ball ∩ box, its CROWN unit bounds, and margin bounds [C] (lower, upper) of logit_y − logit_j."""
    d = x.numel()
    eps = eps_ub if math.isfinite(eps_ub) else (1.0 if norm == "linf" else float(d)) * (bounds[1] - bounds[0])
    inputs = InputSet(x[None], torch.tensor([eps]), norm, bounds)
    unit_bounds, relaxations = crown.layer_bounds(net, inputs)
    spec = crown.margin_spec(torch.tensor([y]), net.classes)
    both = crown.lower_bound(net, len(net.ops), torch.cat([spec, -spec], 1), inputs, relaxations)[0]
    return inputs, [None if b is None else (b[0][0], b[1][0]) for b in unit_bounds], both[:net.classes], \
        -both[net.classes:]


def _program(net: Network, x: Tensor, y: int, norm: str, eps_ub: float, bounds: tuple[float, float],
             targets: list[int], margin_hi: Tensor, unit_bounds: list, inputs: InputSet, radius: float
             ) -> tuple[Program, Encoding, np.ndarray, np.ndarray, np.ndarray]:
    """The MILP: (program, encoding, cost, distance columns, target-selection columns); for L2 the linear part
    only (no distance columns), the quadratic distance being added on the SCIP model."""
    prog = Program()
    lo, hi = inputs.box()
    enc = encode(prog, net, unit_bounds, lo[0], hi[0])
    x0 = x.double().numpy().ravel()
    n = len(x0)
    i = np.arange(n)
    if norm == "linf":
        dist = prog.cols(np.array([radius]), np.array([eps_ub if math.isfinite(eps_ub) else INF]))
        t = np.full(n, dist[0])
        prog.add_rows(np.r_[i, i], np.r_[enc.x, t], np.r_[np.ones(n), -np.ones(n)], np.full(n, -INF), x0)
        prog.add_rows(np.r_[i, i], np.r_[enc.x, t], np.r_[np.ones(n), np.ones(n)], x0, np.full(n, INF))
    elif norm == "l2":  # the distance is a quadratic constraint, added by _solve_scip
        dist = np.zeros(0, dtype=int)
    else:  # x = x0 + p − q with p, q ≥ 0; distance Σ p + q
        lo_, hi_ = lo[0].numpy().ravel(), hi[0].numpy().ravel()
        p, q = prog.cols(np.zeros(n), hi_ - x0), prog.cols(np.zeros(n), x0 - lo_)
        prog.add_rows(np.r_[i, i, i], np.r_[enc.x, p, q], np.r_[np.ones(n), -np.ones(n), np.ones(n)], x0, x0)
        dist = np.r_[p, q]
        prog.add_rows(np.zeros(2 * n, dtype=int), dist, np.ones(2 * n), np.array([radius]),
                      np.array([eps_ub if math.isfinite(eps_ub) else INF]))
    # some target j reaches the label: (W_j − W_y)·h ≥ b_y − b_j, switched off by −M_j (1 − s_j) where s_j = 0
    w = enc.out_w[targets] - enc.out_w[y]
    rhs = enc.out_b[y] - enc.out_b[targets]
    if len(targets) == 1:
        sel = np.zeros(0, dtype=int)
        prog.dense_rows(w, enc.hidden, [], rhs, np.full(1, INF))
    else:
        big = np.maximum(margin_hi[targets].numpy(), 0) + 1e-6
        sel = prog.cols(np.zeros(len(targets)), np.ones(len(targets)), integer=True)
        prog.dense_rows(w, enc.hidden, [(sel, -big)], rhs - big, np.full(len(targets), INF))
        prog.add_rows(np.zeros(len(sel), dtype=int), sel, np.ones(len(sel)), np.ones(1), np.ones(1))
    cost = np.zeros(prog.n_cols)
    cost[dist] = 1.0
    return prog, enc, cost, dist, sel


def _verify(net: Network, x: Tensor, y: int, cand: Tensor, norm: str, claimed: float,
            bounds: tuple[float, float]) -> bool:
    """A forward pass: cand is in the box, within `claimed` of x, and some other logit reaches the label's."""
    if not bool(torch.isfinite(cand).all()):
        return False
    with torch.no_grad():
        logits = net.module(cand[None].double())[0]
    rival = torch.cat([logits[:y], logits[y + 1:]]).max()
    in_box = bool((cand >= bounds[0]).all() and (cand <= bounds[1]).all())
    return in_box and float(distance(cand[None], x[None], norm)) <= claimed + DISTANCE_TOLERANCE and \
        float(rival - logits[y]) >= -TIE_TOLERANCE


@dataclass
class _Solve:
    """What a solver proved about one program: status "optimal" (to the relative gap), "infeasible" or "limit";
    value (the objective as a distance: nan where no point), dual (a proven lower bound of the distance, nan if
    none) and found (the input of its best point, or None)."""

    status: str
    value: float
    dual: float
    found: Tensor | None


def _incumbent(enc: Encoding, inc: Tensor, x: Tensor, norm: str, n_cols: int, dist: np.ndarray, sel: np.ndarray,
               targets: list[int]) -> np.ndarray:
    """Every column's value at the incumbent (a MIP start); for L2 the squared distance is set by the caller."""
    v = enc.assignment(inc.double().numpy(), n_cols)
    xv, x0 = inc.double().numpy().ravel(), x.double().numpy().ravel()
    if norm == "linf":
        v[dist] = np.abs(xv - x0).max()
    elif norm == "l1":
        v[dist] = np.r_[np.maximum(xv - x0, 0), np.maximum(x0 - xv, 0)]
    if len(sel):
        gaps = enc.out_w[targets] @ v[enc.hidden] + enc.out_b[targets]
        v[sel] = np.eye(len(targets))[int(np.argmax(gaps))]
    return v


def _solve_highs(prog: Program, enc: Encoding, cost: np.ndarray, start_at: np.ndarray | None, shape: tuple,
                 time_limit: float, rel_gap: float) -> _Solve:
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
    value = float(info.objective_function_value) if found is not None else math.nan
    kind = {"Optimal": "optimal", "Infeasible": "infeasible"}.get(status, "limit")
    return _Solve(kind, value, dual, found)


def _solve_scip(prog: Program, enc: Encoding, x: Tensor, radius: float, eps_ub: float, start_at: np.ndarray | None,
                time_limit: float, rel_gap: float) -> _Solve:
    """The L2 program: minimise t subject to t ≥ ‖x' − x‖², a convex quadratic constraint (SCIP linearises it
    by outer approximation inside its branch and bound), radius² ≤ t ≤ ε_ub²."""
    import pyscipopt

    model, cols = prog.scip(np.zeros(prog.n_cols))
    x0 = x.double().numpy().ravel()
    top = eps_ub ** 2 * (1 + 1e-9) + 1e-12 if math.isfinite(eps_ub) else None
    t = model.addVar(lb=radius ** 2, ub=top, obj=1.0)
    model.addCons(pyscipopt.quicksum((cols[c] - float(v)) ** 2 for c, v in zip(enc.x, x0)) <= t)
    model.setParam("limits/time", float(time_limit))
    model.setParam("limits/gap", rel_gap)
    model.setParam("limits/absgap", 1e-10)
    if start_at is not None:
        sq = float(((start_at[enc.x] - x0) ** 2).sum())
        scip_start(model, [*cols, t], np.r_[start_at, min(max(sq, radius ** 2), top if top else sq)])
    model.optimize()
    status = model.getStatus()
    found = None
    if model.getNSols() > 0:
        best = model.getBestSol()
        found = torch.tensor([model.getSolVal(best, cols[c]) for c in enc.x], dtype=torch.float64).reshape(x.shape)
    value = math.sqrt(max(model.getObjVal(), 0.0)) if found is not None else math.nan
    dual = model.getDualbound()
    dual = math.sqrt(max(dual, 0.0)) if math.isfinite(dual) and abs(dual) < 1e19 else math.nan
    kind = "optimal" if status in ("optimal", "gaplimit") else "infeasible" if status == "infeasible" else "limit"
    return _Solve(kind, value, dual, found)


def _one(net: Network, x: Tensor, y: int, inc: Tensor, norm: str, time_limit: float,
         bounds: tuple[float, float], rel_gap: float) -> tuple[float, float, float, str, Tensor, int]:
    """(value, lower, upper, status, x_adv, targets pruned) for one correctly classified image."""
    has_inc = bool(torch.isfinite(inc).all())
    eps_ub = float(distance(inc[None], x[None], norm)) if has_inc else math.inf
    inputs, unit_bounds, m_lo, m_hi = _domain(net, x, y, eps_ub, norm, bounds)
    others = [j for j in range(net.classes) if j != y]
    targets = [j for j in others if float(m_lo[j]) <= 0]
    if has_inc:  # the incumbent's class stays a candidate whatever the rounding of the bounds
        with torch.no_grad():
            lg = net.module(inc[None].double())[0]
        j_inc = max(others, key=lambda j: float(lg[j]))
        targets = sorted(set(targets) | {j_inc})
    pruned = len(others) - len(targets)
    nan = torch.full_like(x, math.nan, dtype=torch.float64)
    if not targets:
        return math.inf, math.inf, math.inf, "robust", nan, pruned
    # the certified radius is a valid cut: no adversarial input lies closer (CROWN, bisection on [0, ε_ub])
    eps_max = eps_ub if math.isfinite(eps_ub) else None
    radius = float(certified_radius(net, x[None], torch.tensor([y]), norm=norm, eps_max=eps_max, bounds=bounds)[0])
    radius = min(radius, eps_ub)
    prog, enc, cost, dist, sel = _program(net, x, y, norm, eps_ub, bounds, targets, m_hi, unit_bounds, inputs, radius)
    start_at = _incumbent(enc, inc, x, norm, prog.n_cols, dist, sel, targets) if has_inc else None
    if norm == "l2":
        res = _solve_scip(prog, enc, x, radius, eps_ub, start_at, time_limit, rel_gap)
    else:
        res = _solve_highs(prog, enc, cost, start_at, tuple(x.shape), time_limit, rel_gap)
    found = res.found.clamp(*bounds) if res.found is not None else None
    if res.status == "optimal" and found is not None:
        # the distance claimed is the solver's point's own (for L2 the quadratic constraint holds only to the
        # solver's feasibility tolerance), re-checked by a forward pass
        value = max(res.value, float(distance(found[None], x[None], norm))) if norm == "l2" else res.value
        dual = res.dual if math.isfinite(res.dual) else 0.0
        lower = min(max(dual, value - max(rel_gap * value, 1e-7), 0.0), value)
        if _verify(net, x, y, found, norm, value, bounds):
            return value, lower, value, "optimal", found, pruned
        return math.nan, min(dual, eps_ub), eps_ub, "unverified", inc.double(), pruned
    if res.status == "infeasible" or (res.status == "optimal" and found is None):
        if has_inc:
            return math.nan, 0.0, eps_ub, "unverified", inc.double(), pruned
        return math.inf, math.inf, math.inf, "robust", nan, pruned
    lower = max(res.dual, 0.0) if math.isfinite(res.dual) else 0.0
    upper, best = eps_ub, inc.double()
    if found is not None:
        claimed = float(distance(found[None], x[None], norm))
        if claimed < upper and _verify(net, x, y, found, norm, claimed, bounds):
            upper, best = claimed, found
    return math.nan, min(lower, upper), upper, "time_limit", best, pruned


def exact_minimal(model: nn.Module, x: Tensor, y: Tensor, *, norm: str = "linf", time_limit: float = 60.0,
                  upper: Tensor | None = None, attack: bool = True, bounds: tuple[float, float] = (0.0, 1.0),
                  rel_gap: float = 1e-4) -> ExactResult:
    """Exact minimal L∞, L1 (HiGHS) or L2 (SCIP) distortion that changes the label of each image, inside the box
    `bounds`.

    upper: optional adversarial examples [N, ...] (nan rows for none), e.g. a stronger attack's, used as
    incumbents with the project's attacks (attack=True: FGSM-min, PGD bisection, minimal-L2). time_limit:
    seconds per image; past it an image gets status "time_limit" and proven lower/upper bounds. rel_gap: the
    solver stops when (upper − lower) ≤ rel_gap·upper; value is then the upper bound, re-verified by a forward
    pass, and lower the proven bound (equal to value where the search closed the gap; for L2 the gap applies to
    the squared distance, which SCIP minimises)."""
    if norm not in EXACT_NORMS:
        raise InputError(f"exact_minimal supports norm {', '.join(map(repr, EXACT_NORMS))}, got {norm!r}.")
    if x.dim() < 2 or y.shape != (x.shape[0],):
        raise InputError(f"images [N, ...] and labels [N] expected, got {tuple(x.shape)} and {tuple(y.shape)}.")
    net = network(model, tuple(x.shape[1:]))
    smooth = [op.name for op in net.ops if isinstance(op, Activation) and op.kind != "relu"]
    if smooth:
        raise UnsupportedLayerError(f"the exact minimal perturbation needs a piecewise-linear net (ReLU, maxout, "
                                    f"max-pooling); layer '{smooth[0]}' is not. Use certified_radius for it.")
    x, y = x.detach().cpu(), y.detach().cpu()
    n = x.shape[0]
    incumbents = torch.full(x.shape, math.nan, dtype=torch.float64)
    on_cpu = model if all(p.device.type == "cpu" for p in model.parameters()) else copy.deepcopy(model).cpu()
    for cand in ([attack_upper_bounds(on_cpu, x, y, norm)] if attack else []) + ([upper] if upper is not None else []):
        cand = cand.detach().cpu().double()
        with torch.no_grad():
            logits = net.module(torch.nan_to_num(cand))
        ok = torch.isfinite(cand).flatten(1).all(1) & (logits.argmax(1) != y)
        d_new = torch.where(ok, distance(cand, x, norm), torch.full((n,), math.inf, dtype=torch.float64))
        have = torch.isfinite(incumbents).flatten(1).all(1)
        d_old = torch.where(have, distance(torch.nan_to_num(incumbents), x, norm),
                            torch.full((n,), math.inf, dtype=torch.float64))
        better = d_new < d_old
        incumbents[better] = cand[better]
    with torch.no_grad():
        clean = net.module(x.double()).argmax(1) != y
    rows = []
    for i in range(n):
        t0 = time.perf_counter()
        if bool(clean[i]):
            out = (0.0, 0.0, 0.0, "clean_error", x[i].double(), 0)
        else:
            out = _one(net, x[i].double(), int(y[i]), incumbents[i], norm, time_limit, bounds, rel_gap)
        rows.append((*out, time.perf_counter() - t0))
    f64 = dict(dtype=torch.float64)
    return ExactResult(norm, torch.tensor([r[0] for r in rows], **f64), torch.tensor([r[1] for r in rows], **f64),
                       torch.tensor([r[2] for r in rows], **f64), [r[3] for r in rows],
                       torch.stack([r[4] for r in rows]), torch.tensor([r[6] for r in rows], **f64),
                       torch.tensor([r[5] for r in rows]))


def lp_margin_bounds(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str = "linf",
                     bounds: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """[N, C] lower bounds of logit_y − logit_j over the ε ball ∩ box by the LP (triangle) relaxation with CROWN's
    unit bounds, +inf at j = y: at least as tight as CROWN's own bound (same unit bounds, a smaller relaxation)."""
    if norm not in ("linf", "l1"):
        raise InputError(f"lp_margin_bounds supports norm 'linf' or 'l1' (a linear program), got {norm!r}; the L2 "
                         f"ball is not polyhedral: use margin_bounds(norm='l2').")
    net = network(model, tuple(x.shape[1:]))
    out = torch.full((x.shape[0], net.classes), math.inf, dtype=torch.float64)
    for i in range(x.shape[0]):
        inputs = InputSet(x[i:i + 1].cpu(), torch.tensor([float(eps)]), norm, bounds)
        unit_bounds, _ = crown.layer_bounds(net, inputs)
        prog = Program()
        lo, hi = inputs.box()
        enc = encode(prog, net, [None if b is None else (b[0][0], b[1][0]) for b in unit_bounds], lo[0], hi[0])
        if norm == "l1":
            x0 = x[i].double().numpy().ravel()
            n = len(x0)
            k = np.arange(n)
            p, q = prog.cols(np.zeros(n), hi[0].numpy().ravel() - x0), prog.cols(np.zeros(n), x0 - lo[0].numpy().ravel())
            prog.add_rows(np.r_[k, k, k], np.r_[enc.x, p, q], np.r_[np.ones(n), -np.ones(n), np.ones(n)], x0, x0)
            prog.add_rows(np.zeros(2 * n, dtype=int), np.r_[p, q], np.ones(2 * n), np.array([-INF]),
                          np.array([float(eps)]))
        h = prog.highs(np.zeros(prog.n_cols), relax=True)
        yi = int(y[i])
        for j in range(net.classes):
            if j == yi:
                continue
            cost = np.zeros(prog.n_cols)
            np.add.at(cost, enc.hidden, enc.out_w[yi] - enc.out_w[j])
            h.changeColsCost(prog.n_cols, np.arange(prog.n_cols), cost)
            h.run()
            if h.modelStatusToString(h.getModelStatus()) != "Optimal":
                raise InputError(f"the LP relaxation did not solve for image {i}, class {j}: "
                                 f"{h.modelStatusToString(h.getModelStatus())}.")
            out[i, j] = h.getInfo().objective_function_value + float(enc.out_b[yi] - enc.out_b[j])
    return out
