"""HopSkipJump (Chen, Jordan & Wainwright, IEEE S&P 2020, "HopSkipJumpAttack: A Query-Efficient Decision-Based
Attack"), L2 or L∞, batched over images: a decision-based minimal attack. It reads only the model's top-1 label (the
criterion's `is_adversarial`, an argmax of the logits), never a logit's value nor a gradient, so it sees through any
gradient masking and needs no graph from the output to the input.

Per image (the paper's Algorithm 2, with its geometric-progression step size), d pixels, x* the clean image:
1. A start: uniform noise in the bounds, drawn until the model's label says adversarial (at most INIT_TRIES draws),
   the paper's start; the caller's `starts` instead where adversarial (e.g. images of the target class); else the
   nearest other image of the batch whose clean top-1 label meets the image's criterion (Foolbox's dataset start: a
   model may label all noise alike, as a small MNIST net labels it "2"). The start is then blended towards x* by
   bisection on the blend weight (to width BLEND_TOL), as the authors' code does. (Taking the nearest of the blended
   candidates instead was measured no better: median L2 1.45× minimal-l2's either way, 100 digits, 2,000 queries.)
2. A binary search between x* and the start to the boundary, to precision θ = γ/d^{3/2} (L2, on the blend weight) or
   min(θ·dist, θ·(hi − lo)) with θ = γ/d² (L∞, on the L∞ radius of a box around x*): its adversarial end is x_t.
3. For t = 1 … steps: δ_t = 0.1·(hi − lo) at t = 1, else √d·θ·d_{t−1} (L2) or d·θ·d_{t−1} (L∞), d_{t−1} the L_p distance
   of x_t to x*; B_t = min(B_0·√t, max_evals) random unit directions u_b (Gaussian for L2, uniform for L∞); φ_b = ±1, the
   decision at clip(x_t + δ_t·u_b); the gradient-direction estimate mean((φ_b − mean φ)·u_b) (the mean of φ_b·u_b when
   every φ_b agrees), u_b taken after clipping; the update v is that direction (L2) or its sign (L∞); the step
   ξ = ‖x_t − x*‖_p / √t, halved until x_t + ξ·v is adversarial (at most MAX_HALVINGS times; else x_t stays); then the
   binary search from x* back to the boundary gives the next x_t.
Every x_t is an adversarial end of a binary search, so each was decided adversarial; the one nearest x* is kept.

γ (`gamma`) is the paper's 1 by default; a larger γ probes the boundary farther out (δ and the binary search's precision
both scale with it), which an input quantised by the model needs (the audit uses γ = 300 in L2 there).

Budget: `max_queries` decisions per image, counted per image (extras["queries"]). An image is not estimated again once
its budget cannot pay for B_t decisions; a step-size or binary search stops where the budget runs out, keeping its
adversarial end. Images the model already misclassifies (by the clean top-1 label) are returned as they are, for no
query. Randomness: one CPU generator per image, seeded from `seed` and the image's index only, so an image's result
does not depend on the batch, the device's other images, or the global RNG.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from .base import (Bounds, Prepared, Run, attack, check_choice, check_images, check_int, check_positive,
                   logits_of)
from .criteria import Criterion

HSJ_NORMS = ("l2", "linf")
INIT_TRIES = 25  # uniform-noise draws per image before the batch's other images are tried (the authors' code: 10,000)
BLEND_TOL = 1e-3  # the start's blend bisection stops at this width (the authors' code)
MAX_HALVINGS = 30  # step-size halvings per iteration (ξ then ~1e-9 of the distance: x_t itself)
DRAW_ELEMENTS = 1 << 23  # floats of random directions held at once (images × directions × pixels: 32 MiB)


class Oracle:
    """The decision φ(z): whether the model's top-1 label on z meets the criterion for image `idx`, one query per
    image counted against each image's budget."""

    def __init__(self, model: nn.Module, criterion: Criterion, n: int, max_queries: int, batch_size: int,
                 device: torch.device) -> None:
        self.model, self.criterion, self.budget, self.batch_size = model, criterion, max_queries, batch_size
        self.queries = torch.zeros(n, dtype=torch.long, device=device)

    def left(self, idx: Tensor) -> Tensor:
        return self.budget - self.queries[idx]

    def __call__(self, z: Tensor, idx: Tensor) -> Tensor:
        self.queries.index_add_(0, idx, torch.ones_like(idx))
        return self.criterion.subset(idx).is_adversarial(logits_of(self.model, z, self.batch_size))


def _view(v: Tensor, like: Tensor) -> Tensor:
    return v.to(like).view(-1, *([1] * (like.dim() - 1)))


def distance(x: Tensor, z: Tensor, norm: str) -> Tensor:
    """L2 or L∞ distance per image, in float64."""
    r = (z - x).flatten(1).double()
    return r.norm(dim=1) if norm == "l2" else r.abs().amax(dim=1)


def project(x: Tensor, p: Tensor, alpha: Tensor, norm: str) -> Tensor:
    """The binary search's point at α: the blend (1 − α)·x + α·p (L2), or p clipped to the L∞ box of radius α around
    x (L∞)."""
    a = _view(alpha, x)
    return (1 - a) * x + a * p if norm == "l2" else x + (p - x).clamp(-a, a)


def boundary(oracle: Oracle, x: Tensor, p: Tensor, idx: Tensor, norm: str, theta: float, span: float) -> Tensor:
    """Binary search between x (not adversarial) and p (adversarial) for the boundary: its adversarial end."""
    if norm == "l2":
        high = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        tol = torch.full_like(high, theta)
    else:
        high = distance(x, p, norm)
        tol = torch.minimum(high * theta, torch.full_like(high, theta * span))
    low, start = torch.zeros_like(high), high.clone()
    while True:
        go = ((high - low) > tol) & (oracle.left(idx) > 0)
        if not bool(go.any()):
            break
        g = go.nonzero().flatten()
        mid = (low[g] + high[g]) / 2
        ok = oracle(project(x[g], p[g], mid, norm), idx[g])
        high[g] = torch.where(ok, mid, high[g])
        low[g] = torch.where(ok, low[g], mid)
    return torch.where(_view(high == start, x).bool(), p, project(x, p, high, norm))  # p itself where never moved


def _nearest_other(pool: Tensor, labels: Tensor, crit: Criterion, x: Tensor, idx: Tensor) -> Tensor:
    """Per image, the index into `pool` of the nearest (L2) pool image whose clean top-1 label (one-hot `labels`)
    meets its criterion (−1: none): labels already known, so no query."""
    out, p = torch.full_like(idx, -1), pool.shape[0]
    for s in range(0, len(idx), 64):  # 64 images at a time: no [images, pool] matrix
        k = idx[s:s + 64]
        meets = crit.subset(k.repeat_interleave(p)).is_adversarial(labels.repeat(len(k), 1)).view(len(k), p)
        far = torch.cdist(x[s:s + 64].flatten(1).double(), pool.flatten(1).double()).masked_fill_(~meets, math.inf)
        near = far.argmin(dim=1)
        out[s:s + 64] = torch.where(torch.isfinite(far.gather(1, near[:, None]).squeeze(1)), near, -1)
    return out


def _blend(oracle: Oracle, x: Tensor, s: Tensor, idx: Tensor) -> Tensor:
    """(1 − w)·x + w·s at the smallest blend weight w found adversarial by bisection (s itself is adversarial)."""
    w_lo = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    w_hi = torch.ones_like(w_lo)
    while True:
        go = ((w_hi - w_lo > BLEND_TOL) & (oracle.left(idx) > 0)).nonzero().flatten()
        if not go.numel():
            break
        mid = (w_lo[go] + w_hi[go]) / 2
        ok = oracle(project(x[go], s[go], mid, "l2"), idx[go])
        w_hi[go] = torch.where(ok, mid, w_hi[go])
        w_lo[go] = torch.where(ok, w_lo[go], mid)
    return torch.where(_view(w_hi == 1, x).bool(), s, project(x, s, w_hi, "l2"))


def _start(oracle: Oracle, x: Tensor, idx: Tensor, gens: list[torch.Generator], starts: Tensor | None,
           bounds: Bounds, pool: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(start, found) per image, blended towards x: the caller's start where adversarial, else uniform noise, else the
    nearest image of the batch `pool` whose clean top-1 label (one-hot `labels`) meets the image's criterion."""
    lo, hi = bounds
    point, found = x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    if starts is not None:
        found = oracle(starts, idx)
        point[found] = starts[found]
    for _ in range(INIT_TRIES):
        go = (~found & (oracle.left(idx) > 0)).nonzero().flatten()
        if not go.numel():
            break
        draw = torch.stack([torch.rand(x.shape[1:], generator=gens[i]) for i in idx[go].tolist()]).to(x)
        draw = draw * (hi - lo) + lo
        ok = oracle(draw, idx[go])
        point[go[ok]], found[go[ok]] = draw[ok], True
    go = (~found & (oracle.left(idx) > 0)).nonzero().flatten()
    if go.numel():
        other = _nearest_other(pool, labels, oracle.criterion, x[go], idx[go])
        go, other = go[other >= 0], other[other >= 0]
        if go.numel():
            ok = oracle(pool[other], idx[go])  # a fresh decision for this image
            point[go[ok]], found[go[ok]] = pool[other[ok]], True
    go = found.nonzero().flatten()
    point[go] = _blend(oracle, x[go], point[go], idx[go])
    return point, found


def estimate(oracle: Oracle, xt: Tensor, idx: Tensor, delta: Tensor, count: int, gens: list[torch.Generator],
             norm: str, bounds: Bounds) -> Tensor:
    """The unit gradient-direction estimate at boundary points xt [m, ...] from `count` decisions each (flattened)."""
    m, d = xt.shape[0], xt[0].numel()
    out = torch.empty((m, d), dtype=xt.dtype, device=xt.device)
    group = max(1, DRAW_ELEMENTS // (count * d))
    for s in range(0, m, group):
        rows = slice(s, min(s + group, m))
        draw = torch.randn if norm == "l2" else (lambda *a, **k: torch.rand(*a, **k).mul_(2).sub_(1))
        u = torch.stack([draw((count, d), generator=gens[i]) for i in idx[rows].tolist()]).to(xt)  # [g, B, D]
        u /= u.norm(dim=2, keepdim=True) + 1e-12
        base, step = xt[rows].flatten(1).unsqueeze(1), _view(delta[rows], u)
        z = (base + step * u).clamp_(*bounds)
        u = (z - base) / step  # the direction actually taken, after clipping
        phi = oracle(z.view(-1, *xt.shape[1:]), idx[rows].repeat_interleave(count)).view(-1, count).to(xt) * 2 - 1
        mean = phi.mean(dim=1, keepdim=True)
        weights = torch.where(mean.abs() == 1, phi, phi - mean)  # the baseline, unless every decision agrees
        g = torch.einsum("gb,gbd->gd", weights, u) / count
        out[rows] = g / (g.norm(dim=1, keepdim=True) + 1e-12)
    return out.view_as(xt)


def step(oracle: Oracle, xt: Tensor, v: Tensor, xi: Tensor, idx: Tensor, bounds: Bounds) -> tuple[Tensor, Tensor]:
    """The geometric progression: (x_t + ξ·v with ξ halved until adversarial, moved); x_t where none was found."""
    xi, pending = xi.clone(), torch.ones(xt.shape[0], dtype=torch.bool, device=xt.device)
    for _ in range(MAX_HALVINGS):
        go = (pending & (oracle.left(idx) > 0)).nonzero().flatten()
        if not go.numel():
            break
        ok = oracle((xt[go] + _view(xi[go], xt) * v[go]).clamp(*bounds), idx[go])
        pending[go[ok]] = False
        xi[go[~ok]] /= 2
    moved = ~pending
    return torch.where(_view(moved, xt).bool(), (xt + _view(xi, xt) * v).clamp(*bounds), xt), moved


def _check(args: dict[str, Any]) -> None:
    check_choice("norm", args["norm"], HSJ_NORMS)
    for name in ("steps", "max_queries", "init_evals", "max_evals", "batch_size"):
        check_int(name, args[name])
    check_int("seed", args["seed"], 0)
    check_positive("gamma", args["gamma"])
    if args["max_evals"] < args["init_evals"]:
        raise InputError(f"max_evals ({args['max_evals']}) must be >= init_evals ({args['init_evals']}): the "
                         f"evaluations per gradient estimate grow from init_evals·√t up to max_evals.")
    images, starts = args["images"], args["starts"]
    if starts is not None:
        check_images(starts, "starts", args["bounds"])
        if isinstance(images, Tensor) and starts.shape != images.shape:
            raise InputError(f"starts must have the images' shape {tuple(images.shape)} (one start per image), got "
                             f"{tuple(starts.shape)}.")


@attack("hopskipjump-l2", check=_check)
def hopskipjump(a: Prepared, *, norm: str = "l2", steps: int = 64, max_queries: int = 25_000, init_evals: int = 100,
                max_evals: int = 10_000, gamma: float = 1.0, starts: Tensor | None = None, seed: int = 0,
                batch_size: int = 2000, bounds: Bounds = (0.0, 1.0)) -> Run:
    """HopSkipJump, minimal L2 or L∞ from the top-1 label alone: x_adv [N, ...] ("hopskipjump-l2" / "-linf");
    extras "queries" (decisions per image, ≤ max_queries) and "iterations" (gradient estimates per image). Images
    for which no adversarial start was found are returned unchanged (not adversarial)."""
    x, crit = a.x, a.criterion
    n, d = x.shape[0], x[0].numel()
    span = bounds[1] - bounds[0]
    theta = gamma / (d ** 1.5 if norm == "l2" else d ** 2)
    oracle = Oracle(a.model, crit, n, max_queries, batch_size, x.device)
    gens = [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in range(n)]
    x_adv = x.clone()
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    with torch.no_grad():
        todo = (~crit.is_adversarial(a.clean_logits)).nonzero().flatten()  # a clean error is its own example
        top1 = torch.nn.functional.one_hot(a.clean_logits.argmax(dim=1), a.clean_logits.shape[1]).to(x)
        begin, found = _start(oracle, x[todo], todo, gens, None if starts is None else starts.to(x)[todo], bounds,
                              x, top1)
        idx = todo[found]
        cur = boundary(oracle, x[idx], begin[found], idx, norm, theta, span)
        dist = distance(x[idx], cur, norm)
        best, best_dist = cur.clone(), dist.clone()
        for t in range(1, steps + 1):
            count = min(int(init_evals * math.sqrt(t)), max_evals)
            live = (oracle.left(idx) >= count).nonzero().flatten()
            if not live.numel():
                break
            rows, x0 = idx[live], x[idx[live]]
            delta = torch.full_like(dist[live], 0.1 * span) if t == 1 else \
                dist[live] * theta * (math.sqrt(d) if norm == "l2" else d)
            v = estimate(oracle, cur[live], rows, delta, count, gens, norm, bounds)
            if norm == "linf":
                v = v.sign()
            iterations[rows] += 1
            moved_to, moved = step(oracle, cur[live], v, dist[live] / math.sqrt(t), rows, bounds)
            if bool(moved.any()):
                m = moved.nonzero().flatten()
                moved_to[m] = boundary(oracle, x0[m], moved_to[m], rows[m], norm, theta, span)
            cur[live] = moved_to
            dist[live] = distance(x0, moved_to, norm)
            better = dist < best_dist
            best[better], best_dist[better] = cur[better], dist[better]
        x_adv[idx] = best
    return Run(x_adv, extras={"queries": oracle.queries, "iterations": iterations}, attack=f"hopskipjump-{norm}")
