"""Andriushchenko et al.'s Square Attack (ECCV 2020, "Square Attack: a query-efficient black-box adversarial
attack via random search"), L∞ or L2, at a list of budgets ε: gradient-free, it only reads the model's logits.

Both norms: a start, then `n_queries` − 1 times a proposal per image still not adversarial, kept if it lowers the
logit margin (the criterion's "margin" loss: < 0 exactly where the image is adversarial). The window's side
follows round(√(p·H·W)) with p on the paper's piecewise-constant schedule (p_init halved at 10, 50, 200, 500,
1000, 2000, 4000, 6000 and 8000 of every 10,000 queries). An image stops being queried once it is adversarial.
p_init defaults to 0.8, the paper's choice on MNIST (Madry et al.'s challenge) and AutoAttack's for both norms,
measured here to find more adversarial MNIST digits than its ImageNet default 0.05 at the same query budget. The
paper's targeted variant descends the cross-entropy; here both kinds use the margin.

L∞ (the paper's Algorithm 2): start at vertical stripes x + ε·s (one random sign s per column and channel, clipped
to the bounds); a proposal sets every pixel of a random square window to x ± ε (one random sign per channel). The
side is clamped to [1, H − 1].

L2 (Algorithm 3, as the authors' code and AutoAttack run it): start at a grid of ⌊H/5⌋-pixel blocks, each holding
the "meta" pattern η (a positive and a negative half, each nested rectangles weighted 1/(k+1)², unit L2; randomly
transposed) times a random sign per channel, the whole scaled to L2 = ε. A proposal picks two random windows of
odd side ≥ 3 (clamped to H − 1): the second's perturbation is removed, the first's is replaced by (its own
direction + a fresh ±η), rescaled per channel to carry the L2 mass both windows held plus whatever the image has
left to ε; the whole perturbation is then rescaled onto the ε-sphere. Clipping x + δ to the bounds only shrinks
each pixel's change, so the kept example stays within ε without a further projection. Concentrated squares cross
thresholds (e.g. an input quantisation) that the spread-out small steps of gradient attacks stay under.

Randomness comes from CPU generators seeded from `seed`, the ε and the batch only (never the global RNG; one per ε
and batch), drawn for every image of a batch at every query whether or not it is still active, so a call is
reproducible on any device; a search stops early once every image of its batch is adversarial (no later draw could
change anything).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from .base import Bounds, Prepared, Run, attack, check_choice, check_int, check_positive, logits_of
from .criteria import Criterion

SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256),
            (10000, 512))  # (up to this many of 10,000 queries, divide p_init by)
SQUARE_NORMS = ("linf", "l2")


def p_schedule(p_init: float, it: int, n_queries: int) -> float:
    """The paper's fraction of pixels changed at query `it` of `n_queries` (its p_selection)."""
    step = int(it / n_queries * 10000)
    for upto, div in SCHEDULE:
        if step <= upto:
            return p_init / div if step > 10 else p_init
    return p_init


def _signs(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    return torch.randint(0, 2, shape, generator=gen).float().mul_(2).sub_(1)


def _window(top: Tensor, left: Tensor, side: int, h: int, w: int) -> Tensor:
    """[n, 1, H, W]: True inside each image's side×side window at (top, left) (CPU draws, CPU mask)."""
    hh, ww = torch.arange(h), torch.arange(w)
    rows = (hh >= top[:, None]) & (hh < top[:, None] + side)
    cols = (ww >= left[:, None]) & (ww < left[:, None] + side)
    return rows[:, None, :, None] & cols[:, None, None, :]


def _rectangles(a: int, b: int) -> Tensor:
    """a×b nested rectangles around the centre, the k-th (2k+1 on a side) adding 1/(k+1)², at unit L2 (the
    reference's eta_rectangles)."""
    d = torch.zeros(a, b, dtype=torch.float64)
    for k in range(max(a // 2, b // 2) + 1):
        d[max(a // 2 - k, 0):a // 2 + k + 1, max(b // 2 - k, 0):b // 2 + k + 1] += 1 / (k + 1) ** 2
    return d / d.norm() if d.numel() else d


@functools.lru_cache(maxsize=64)
def meta_square(side: int) -> Tensor:
    """η: the side×side pattern of the L2 attack, nested rectangles in the top half, their negative below, at unit
    L2 (float32, CPU; the reference's eta)."""
    d = torch.cat([_rectangles(side // 2, side), -_rectangles(side - side // 2, side)])
    return (d / d.norm()).float()


def _eta(flip: Tensor, side: int) -> Tensor:
    """η per draw (transposed where flip), shape [*flip.shape, side, side]."""
    e = meta_square(side)
    return torch.where(flip[..., None, None], e.T, e)


Draw = Callable[[int], Any]  # query index -> every image's draws for it
Propose = Callable[[Any, Tensor, Tensor, Tensor], Tensor]  # (draws, active on CPU, x, best) of the active -> proposal


def _search(model: nn.Module, x: Tensor, crit: Criterion, x_best: Tensor, *, n_queries: int, batch_size: int,
            draw: Draw, propose: Propose) -> tuple[Tensor, Tensor]:
    """The random search both norms share: (x_adv, queries used) from a start x_best."""
    margin = crit.loss(logits_of(model, x_best, batch_size), "margin").float()
    queries = torch.ones(x.shape[0], dtype=torch.long)
    for it in range(n_queries - 1):
        active = (margin >= 0).nonzero().flatten()
        if not active.numel():
            break  # every image is adversarial for good (a margin only falls): no later draw can matter
        d = draw(it)  # every image's draws, active or not, so an image's draws never depend on when others succeed
        on_cpu = active.cpu()  # the draws live on the CPU (one generator on every device), the images beside the model
        best = x_best[active]
        proposal = propose(d, on_cpu, x[active], best)
        new = crit.subset(active).loss(logits_of(model, proposal, batch_size), "margin").float()
        better = new < margin[active]
        queries[on_cpu] += 1
        margin[active] = torch.where(better, new, margin[active])
        x_best[active] = torch.where(better.view(-1, 1, 1, 1), proposal, best)
    return x_best, queries


def _run_linf(model: nn.Module, x: Tensor, crit: Criterion, eps: float, *, n_queries: int, p_init: float,
              gen: torch.Generator, bounds: Bounds, batch_size: int) -> tuple[Tensor, Tensor]:
    n, c, h, w = x.shape
    x_best = (x + eps * _signs((n, c, 1, w), gen).to(x)).clamp_(*bounds)

    def draw(it: int) -> tuple[int, Tensor, Tensor, Tensor]:
        side = min(max(int(round(math.sqrt(p_schedule(p_init, it, n_queries) * h * w))), 1), h - 1, w - 1)
        return (side, torch.randint(0, h - side, (n,), generator=gen), torch.randint(0, w - side, (n,), generator=gen),
                _signs((n, c, 1, 1), gen))

    def propose(d: tuple[int, Tensor, Tensor, Tensor], on_cpu: Tensor, xa: Tensor, best: Tensor) -> Tensor:
        side, top, left, signs = d
        window = _window(top[on_cpu], left[on_cpu], side, h, w).to(x.device)
        sa = signs[on_cpu].to(x)
        proposal = torch.where(window, (xa + eps * sa).clamp(*bounds), best)
        same = ~((proposal - best).abs() >= 1e-7).logical_and(window).flatten(1).any(1)
        if bool(same.any()):  # the paper redraws signs that leave the window unchanged; the opposite ones never do
            sa = torch.where(same.view(-1, 1, 1, 1), -sa, sa)
            proposal = torch.where(window, (xa + eps * sa).clamp(*bounds), best)
        return proposal

    return _search(model, x, crit, x_best, n_queries=n_queries, batch_size=batch_size, draw=draw, propose=propose)


def _on_sphere(x: Tensor, delta: Tensor, eps: float, bounds: Bounds) -> Tensor:
    """x + δ rescaled to L2 = ε, clipped to the bounds (which only shrinks it: no re-projection needed)."""
    size = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return (x + delta * (eps / (size + 1e-12))).clamp_(*bounds)


def l2_start(n: int, c: int, h: int, w: int, gen: torch.Generator) -> Tensor:
    """The L2 attack's start direction [n, c, H, W] (unnormalised, CPU): a centred grid of ⌊min(H, W)/5⌋-pixel
    blocks, each ±η (a sign per image, block and channel; transposed at random per image and block)."""
    s = max(min(h, w) // 5, 1)
    nh, nw = h // s, w // s
    flip = torch.randint(0, 2, (n, 1, nh, nw), generator=gen).bool()
    blocks = _eta(flip, s) * _signs((n, c, nh, nw), gen)[..., None, None]  # [n, c, nh, nw, s, s]
    delta = torch.zeros(n, c, h, w)
    top, left = (h - nh * s) // 2, (w - nw * s) // 2
    delta[:, :, top:top + nh * s, left:left + nw * s] = blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, c, nh * s, nw * s)
    return delta


def _run_l2(model: nn.Module, x: Tensor, crit: Criterion, eps: float, *, n_queries: int, p_init: float,
            gen: torch.Generator, bounds: Bounds, batch_size: int) -> tuple[Tensor, Tensor]:
    n, c, h, w = x.shape
    x_best = _on_sphere(x, l2_start(n, c, h, w, gen).to(x), eps, bounds)

    def draw(it: int) -> tuple[int, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        side = max(int(round(math.sqrt(p_schedule(p_init, it, n_queries) * h * w))), 3)
        side = min(side + 1 - side % 2, h - 1, w - 1)  # odd, as the reference's, and inside the image
        if side % 2 == 0:
            side -= 1
        return (side, torch.randint(0, h - side, (n,), generator=gen), torch.randint(0, w - side, (n,), generator=gen),
                torch.randint(0, h - side, (n,), generator=gen), torch.randint(0, w - side, (n,), generator=gen),
                torch.randint(0, 2, (n,), generator=gen).bool(), _signs((n, c), gen))

    def propose(d: tuple[int, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], on_cpu: Tensor, xa: Tensor,
                best: Tensor) -> Tensor:
        side, top, left, top2, left2, flip, signs = d
        m = on_cpu.numel()
        delta = best - xa
        first = _window(top[on_cpu], left[on_cpu], side, h, w).to(x.device)
        second = _window(top2[on_cpu], left2[on_cpu], side, h, w).to(x.device)
        size = delta.flatten(1).norm(dim=1)
        held = torch.where(first | second, delta, 0).flatten(1).norm(dim=1)  # the L2 mass of the two windows
        ar = torch.arange(side)
        rows = (top[on_cpu, None] + ar).to(x.device)[:, :, None]  # [m, side, 1]
        cols = (left[on_cpu, None] + ar).to(x.device)[:, None, :]  # [m, 1, side]
        img = torch.arange(m, device=x.device)[:, None, None]
        old = delta[img, :, rows, cols]  # [m, side, side, c]: the first window, channels last
        old = old / (old.square().sum((1, 2), keepdim=True).sqrt() + 1e-12)
        new = _eta(flip[on_cpu], side)[..., None].to(x) * signs[on_cpu][:, None, None, :].to(x) + old
        mass = ((eps ** 2 - size.square()).clamp(min=0) / c + held.square()).sqrt().view(-1, 1, 1, 1)
        new = new / (new.square().sum((1, 2), keepdim=True).sqrt() + 1e-12) * mass
        delta = torch.where(second, 0, delta)
        delta[img, :, rows, cols] = new
        return _on_sphere(xa, delta, eps, bounds)

    return _search(model, x, crit, x_best, n_queries=n_queries, batch_size=batch_size, draw=draw, propose=propose)


def _check(args: dict[str, Any]) -> None:
    check_choice("norm", args["norm"], SQUARE_NORMS)
    check_int("n_queries", args["n_queries"])
    check_positive("p_init", args["p_init"])
    if args["p_init"] > 1:
        raise InputError(f"p_init is the fraction of pixels a square covers at first, in (0, 1]; got {args['p_init']}.")
    check_int("seed", args["seed"], 0)
    check_int("batch_size", args["batch_size"])
    images = args["images"]
    if isinstance(images, Tensor) and images.dim() != 4:
        raise InputError(f"square needs images [N, C, H, W] (it perturbs square windows), got shape "
                         f"{tuple(images.shape)}; reshape flat images, e.g. images.view(-1, 1, 28, 28).")
    if isinstance(images, Tensor) and images.dim() == 4 and min(images.shape[2:]) < 2:
        raise InputError(f"square needs images at least 2×2 pixels, got shape {tuple(images.shape)}.")


@attack("square-linf", budgets="epsilons", check=_check)
def square(a: Prepared, *, norm: str = "linf", n_queries: int = 1000, p_init: float = 0.8, seed: int = 0,
           batch_size: int = 1000, bounds: Bounds = (0.0, 1.0)) -> Run:
    """Square Attack (L∞ or L2) at each ε: a fixed-budget result ("square-linf" / "square-l2"), x_adv [K, N, ...]
    and success [K, N] (fresh forward pass); extras["queries"] [K, N] counts the model queries each image used
    (≤ n_queries).

    Gradient-free: a check that gradient attacks are not fooled by masked gradients (it should not beat them)."""
    x, crit, eps = a.x, a.criterion, a.budgets
    assert eps is not None
    run = _run_l2 if norm == "l2" else _run_linf
    x_adv = torch.empty((len(eps), *x.shape), device=x.device, dtype=x.dtype)
    queries = torch.zeros((len(eps), x.shape[0]), dtype=torch.long)
    with torch.no_grad():
        for k, e in enumerate(eps):
            for i in range(0, x.shape[0], batch_size):
                sl = slice(i, i + batch_size)
                if e == 0:
                    x_adv[k, sl], queries[k, sl] = x[sl], 1
                    continue
                # one generator per ε and batch, from (seed, ε, batch) only: a search stops once its images are all
                # adversarial, so a shared one would make the next search's draws depend on when that happened
                gen = torch.Generator().manual_seed(seed * 1_000_003 + round(e * 1e6) * 1009 + i // batch_size)
                x_adv[k, sl], queries[k, sl] = run(a.model, x[sl], crit.subset(sl), e, n_queries=n_queries,
                                                   p_init=p_init, gen=gen, bounds=bounds, batch_size=batch_size)
    return Run(x_adv, measures=a.assess(x, x_adv, crit, per_budget=True), extras={"queries": queries.to(x.device)},
               attack=f"square-{norm}", params={"loss": "margin"})
