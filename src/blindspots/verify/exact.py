"""Exact minimal adversarial perturbations of piecewise-linear nets (MILP: HiGHS; L2: SCIP), and the LP relaxation.

Per image: the best adversarial example of the project's attacks (and any the caller hands in) is the incumbent
and its distance ε_ub the upper bound; the program's domain is the ε_ub ball ∩ box, over which CROWN bounds every
unit (the big-M constants) and excludes the target classes whose margin is certified positive. HiGHS then
minimises the L∞ or L1 distance to any input whose logit of another class reaches the label's
(a tie counts as adversarial: the minimum of a closed set). L2 is a mixed-integer program with a convex quadratic
constraint t ≥ ‖x' − x‖² (minimise t), which HiGHS does not take with integer columns: the same program goes
to SCIP (pyscipopt). The certified radius cuts the program from below (for speed); the solver's point is polished
(polish.py: the minimum over its own linear region, without the cut) and re-verified by a forward pass, and its
own distance is the value. Lower bounds come from the solver's dual bound and the radius, never from the point;
a verified point inside the radius, or a solver at odds with the forward pass, is FLAGged, not clamped away.
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
from .milp import INF, Encoding, Program, encode
from .network import Activation, Network, UnsupportedLayerError, network
from .polish import margin, nudge, polish
from .solve import solve_highs, solve_scip

EXACT_NORMS = ("linf", "l1", "l2")
BRACKET_TOLERANCE = 1e-7  # relative (to max(1, radius)): a verified point this far inside the certified radius FLAGs


@dataclass
class ExactResult:
    """Per image [N]: value (the distance of the closest adversarial input found, x_adv, re-verified by a forward
    pass; where the status is "optimal" the exact minimum lies in [lower, value]; nan otherwise); lower: the
    solver's dual bound (SCIP's net of its feasibility tolerance) or the certified radius where larger, and for
    "optimal" at most value·(1 − rel_gap) − abs_gap (L2: on the squared distance) since a solver stops within that
    gap: proven as far as the radius and the solver are sound, never derived from a point alone; upper: the
    closest verified adversarial input's distance (= value where "optimal"). status: "optimal", "time_limit",
    "robust" (no adversarial input in the box), "clean_error" (already misclassified, value 0) or "unverified"
    (the solver's answer contradicts the forward pass: also FLAGged). x_adv [N, ...] (nan where none),
    solve_time (seconds), targets_pruned (classes the bounds excluded before solving), radius (the certified
    radius the program was cut with; nan where not solved), flags (per image, "" or why the bracket radius ≤
    exact ≤ upper failed: an unsound radius or a solver at odds with the forward pass)."""

    norm: str
    value: Tensor
    lower: Tensor
    upper: Tensor
    status: list[str]
    x_adv: Tensor
    solve_time: Tensor
    targets_pruned: Tensor
    radius: Tensor
    flags: list[str]


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
    inputs = InputSet(x[None], torch.tensor([eps], dtype=torch.float64), norm, bounds)
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


@dataclass
class _Attempt:
    """One solve of the program with a given radius cut, its points re-verified: value (the closest verified
    point's distance where the solver proved optimality, else nan), lower, upper, status, x_adv, flags."""

    value: float
    lower: float
    upper: float
    status: str
    x_adv: Tensor
    flags: list[str]


def _closest(net: Network, x: Tensor, y: int, points: list[Tensor], norm: str, bounds: tuple[float, float]
             ) -> tuple[float, Tensor | None]:
    """(distance, point) of the closest adversarial input among each point polished (the minimum over its own
    linear region) and the point itself, each nudged onto the adversarial side and checked by a forward pass
    (in the box, some other logit ≥ the label's, no tolerance); (inf, None) where none passes."""
    best, arg = math.inf, None
    for p in points:
        for cand in (polish(net, x, y, p, norm, bounds), p):
            if cand is None or not bool(torch.isfinite(cand).all()):
                continue
            cand = nudge(net, x, y, cand.clamp(*bounds), norm, bounds)
            if margin(net, cand, y) <= 0:
                d = float(distance(cand[None], x[None], norm))
                if d < best:
                    best, arg = d, cand
    return best, arg


def _attempt(net: Network, x: Tensor, y: int, inc: Tensor, norm: str, eps_ub: float, domain: tuple,
             targets: list[int], radius: float, time_limit: float, bounds: tuple[float, float], rel_gap: float
             ) -> _Attempt:
    """Solve with the cut distance ≥ radius, re-verify, and state the bounds; FLAG what contradicts itself."""
    inputs, unit_bounds, m_hi = domain
    has_inc = bool(torch.isfinite(inc).all())
    prog, enc, cost, dist, sel = _program(net, x, y, norm, eps_ub, bounds, targets, m_hi, unit_bounds, inputs, radius)
    start_at = _incumbent(enc, inc, x, norm, prog.n_cols, dist, sel, targets) if has_inc else None
    if norm == "l2":
        scale = eps_ub if math.isfinite(eps_ub) else math.sqrt(x.numel()) * (bounds[1] - bounds[0])
        res = solve_scip(prog, enc, x, radius, scale, start_at, time_limit, rel_gap)
    else:
        res = solve_highs(prog, enc, cost, start_at, tuple(x.shape), time_limit, rel_gap)
    solver_d, solver_p = _closest(net, x, y, [res.found] if res.found is not None else [], norm, bounds)
    inc_d, inc_p = _closest(net, x, y, [inc.double()] if has_inc else [], norm, bounds)
    upper, best = (solver_d, solver_p) if solver_d <= inc_d else (inc_d, inc_p)
    nan = torch.full_like(x, math.nan, dtype=torch.float64)
    dual = res.dual if math.isfinite(res.dual) else -math.inf
    flags = []
    tol = BRACKET_TOLERANCE * max(1.0, radius)
    if upper < radius - tol:
        flags.append(f"a verified adversarial input at {upper:.9g} lies inside the certified radius {radius:.9g}: "
                     f"the radius is unsound")
    if res.status == "optimal" and solver_p is not None:
        slack = (1 - rel_gap) * upper - res.abs_gap if norm != "l2" else \
            math.sqrt(max((1 - rel_gap) * upper ** 2 - res.abs_gap ** 2, 0.0))
        lower = max(min(slack, dual if math.isfinite(dual) else slack), radius, 0.0)
        if dual > upper * (1 + rel_gap) + res.abs_gap + tol:
            flags.append(f"the solver's dual bound {dual:.9g} exceeds a verified adversarial distance {upper:.9g}")
        return _Attempt(upper, lower, upper, "optimal", best, flags)
    if res.status == "infeasible" and not has_inc:
        return _Attempt(math.inf, math.inf, math.inf, "robust", nan, flags)
    lower = max(dual, radius, 0.0)
    if res.status == "optimal":
        flags.append("the solver reports optimal, yet its point fails the forward-pass check")
        status = "unverified"
    elif res.status == "infeasible":
        flags.append(f"the solver reports no adversarial input, yet the incumbent at {eps_ub:.9g} is one")
        status = "unverified"
    else:
        status = "time_limit"
    if dual > upper + tol:
        flags.append(f"the solver's dual bound {dual:.9g} exceeds a verified adversarial distance {upper:.9g}")
    return _Attempt(math.nan, lower, upper, status, best if best is not None else nan, flags)


def _one(net: Network, x: Tensor, y: int, inc: Tensor, norm: str, time_limit: float, bounds: tuple[float, float],
         rel_gap: float, radius: float | None, check: bool) -> tuple[_Attempt, int, float]:
    """(the attempt with the radius cut, targets pruned, the radius) for one correctly classified image; with
    check, a second solve without the cut must agree with the first (else FLAG)."""
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
    if not targets:
        return _Attempt(math.inf, math.inf, math.inf, "robust", torch.full_like(x, math.nan), []), pruned, math.nan
    flags = []
    if radius is None:  # CROWN's certified radius: a valid cut, no adversarial input lies closer
        eps_max = eps_ub if math.isfinite(eps_ub) else None
        radius = float(certified_radius(net, x[None], torch.tensor([y]), norm=norm, eps_max=eps_max,
                                        bounds=bounds)[0])
    elif radius > eps_ub + BRACKET_TOLERANCE * max(1.0, radius):
        flags.append(f"the certified radius {radius:.9g} exceeds an adversarial example's distance {eps_ub:.9g}: "
                     f"the radius is unsound")
    radius = min(radius, eps_ub)
    domain = (inputs, unit_bounds, m_hi)
    cut = _attempt(net, x, y, inc, norm, eps_ub, domain, targets, radius, time_limit, bounds, rel_gap)
    cut.flags[:0] = flags
    if (check or cut.status == "robust") and radius > 0:  # "robust" under a cut: only as sound as the cut
        free = _attempt(net, x, y, inc, norm, eps_ub, domain, targets, 0.0, time_limit, bounds, rel_gap)
        tol = BRACKET_TOLERANCE * max(1.0, cut.upper if math.isfinite(cut.upper) else 1.0)
        if free.upper < cut.lower - tol:
            cut.flags.append(f"without the radius cut an adversarial input at {free.upper:.9g} is found, below the "
                             f"lower bound {cut.lower:.9g} proven with the cut at {radius:.9g}: the radius is unsound")
        if free.lower > cut.upper + tol:
            cut.flags.append(f"without the radius cut the lower bound is {free.lower:.9g}, above the adversarial "
                             f"distance {cut.upper:.9g} found with it")
        cut.flags += [f"(without the cut) {f}" for f in free.flags]
    return cut, pruned, radius


def exact_minimal(model: nn.Module, x: Tensor, y: Tensor, *, norm: str = "linf", time_limit: float = 60.0,
                  upper: Tensor | None = None, attack: bool = True, bounds: tuple[float, float] = (0.0, 1.0),
                  rel_gap: float = 1e-4, radius: Tensor | None = None, check: bool = False) -> ExactResult:
    """Exact minimal L∞, L1 (HiGHS) or L2 (SCIP) distortion that changes the label of each image, inside the box
    `bounds`.

    upper: optional adversarial examples [N, ...] (nan rows for none), e.g. a stronger attack's, used as
    incumbents with the project's attacks (attack=True: FGSM-min, PGD bisection, minimal-L2). time_limit:
    seconds per image; past it an image gets status "time_limit" and proven lower/upper bounds. rel_gap: the
    solver stops when (upper − lower) ≤ rel_gap·upper (for L2 on the squared distance, which SCIP minimises).
    radius: certified radii [N] to cut the program with (default: CROWN's by bisection); a cut above the truth is
    FLAGged where a verified point falls inside it, not hidden. check: solve each image a second time without the
    cut and FLAG a disagreement (twice the time; for tests and spot checks)."""
    if norm not in EXACT_NORMS:
        raise InputError(f"exact_minimal supports norm {', '.join(map(repr, EXACT_NORMS))}, got {norm!r}.")
    if x.dim() < 2 or y.shape != (x.shape[0],):
        raise InputError(f"images [N, ...] and labels [N] expected, got {tuple(x.shape)} and {tuple(y.shape)}.")
    if radius is not None and radius.shape != (x.shape[0],):
        raise InputError(f"radius: one certified radius per image [N] expected, got {tuple(radius.shape)}.")
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
            a, pruned, r = _Attempt(0.0, 0.0, 0.0, "clean_error", x[i].double(), []), 0, 0.0
        else:
            given = None if radius is None else float(radius[i])
            a, pruned, r = _one(net, x[i].double(), int(y[i]), incumbents[i], norm, time_limit, bounds, rel_gap,
                                given, check)
        rows.append((a, pruned, r, time.perf_counter() - t0))
    f64 = dict(dtype=torch.float64)
    return ExactResult(norm, torch.tensor([a.value for a, *_ in rows], **f64),
                       torch.tensor([a.lower for a, *_ in rows], **f64),
                       torch.tensor([a.upper for a, *_ in rows], **f64),
                       [a.status for a, *_ in rows], torch.stack([a.x_adv for a, *_ in rows]),
                       torch.tensor([t for *_, t in rows], **f64), torch.tensor([p for _, p, _, _ in rows]),
                       torch.tensor([r for _, _, r, _ in rows], **f64), ["; ".join(a.flags) for a, *_ in rows])


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
        inputs = InputSet(x[i:i + 1].cpu(), torch.tensor([float(eps)], dtype=torch.float64), norm, bounds)
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
