"""Andriushchenko et al.'s Square Attack (ECCV 2020, "Square Attack: a query-efficient black-box adversarial
attack via random search"), L∞, at a list of budgets ε: gradient-free, it only reads the model's logits.

For each ε: start at vertical stripes x + ε·s (one random sign s per column and channel, clipped to the bounds),
then `n_queries` − 1 times propose, per image still not adversarial, a random square window whose pixels are all
set to x ± ε (one random sign per channel) and keep the proposal if it lowers the logit margin (the criterion's
"margin" loss: < 0 exactly where the image is adversarial). The window's side is round(√(p·H·W)), clamped to
[1, H − 1], with p following the paper's piecewise-constant schedule (p_init halved at 10, 50, 200, 500, 1000,
2000, 4000, 6000 and 8000 of every 10,000 queries). An image stops being queried once it is adversarial.
p_init defaults to 0.8, the paper's choice on MNIST (Madry et al.'s challenge), measured here to find more
adversarial MNIST digits than its ImageNet default 0.05 at the same query budget. The paper's targeted variant descends the cross-entropy; here both kinds use the margin.

Randomness comes from one CPU generator seeded with `seed` only (never the global RNG), drawn for every image of a
batch at every query whether or not it is still active, so a call is reproducible on any device.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from .base import Bounds, Prepared, Run, attack, check_int, check_positive, logits_of
from .criteria import Criterion

SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256),
            (10000, 512))  # (up to this many of 10,000 queries, divide p_init by)


def p_schedule(p_init: float, it: int, n_queries: int) -> float:
    """The paper's fraction of pixels changed at query `it` of `n_queries` (its p_selection)."""
    step = int(it / n_queries * 10000)
    for upto, div in SCHEDULE:
        if step <= upto:
            return p_init / div if step > 10 else p_init
    return p_init


def _signs(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    return torch.randint(0, 2, shape, generator=gen).float().mul_(2).sub_(1)


def _run(model: nn.Module, x: Tensor, crit: Criterion, eps: float, *, n_queries: int, p_init: float,
         gen: torch.Generator, bounds: Bounds, batch_size: int) -> tuple[Tensor, Tensor]:
    """(x_adv, queries used) for one batch at one ε."""
    n, c, h, w = x.shape
    if eps == 0:
        return x.clone(), torch.ones(n, dtype=torch.long)
    x_best = (x + eps * _signs((n, c, 1, w), gen).to(x)).clamp_(*bounds)
    margin = crit.loss(logits_of(model, x_best, batch_size), "margin").float()
    queries = torch.ones(n, dtype=torch.long)
    hh, ww = torch.arange(h), torch.arange(w)
    for it in range(n_queries - 1):
        side = min(max(int(round(math.sqrt(p_schedule(p_init, it, n_queries) * h * w))), 1), h - 1, w - 1)
        top = torch.randint(0, h - side, (n,), generator=gen)
        left = torch.randint(0, w - side, (n,), generator=gen)
        signs = _signs((n, c, 1, 1), gen)
        active = (margin >= 0).nonzero().flatten()
        if not active.numel():
            continue  # keep drawing, so an image's draws never depend on when the others succeed
        on_cpu = active.cpu()  # the draws live on the CPU (one generator on every device), the images beside the model
        rows = (hh >= top[on_cpu, None]) & (hh < top[on_cpu, None] + side)
        cols = (ww >= left[on_cpu, None]) & (ww < left[on_cpu, None] + side)
        window = (rows[:, None, :, None] & cols[:, None, None, :]).to(x.device)
        xa, best = x[active], x_best[active]
        sa = signs[on_cpu].to(x)
        proposal = torch.where(window, (xa + eps * sa).clamp(*bounds), best)
        same = ~((proposal - best).abs() >= 1e-7).logical_and(window).flatten(1).any(1)
        if bool(same.any()):  # the paper redraws signs that leave the window unchanged; the opposite ones never do
            sa = torch.where(same.view(-1, 1, 1, 1), -sa, sa)
            proposal = torch.where(window, (xa + eps * sa).clamp(*bounds), best)
        new = crit.subset(active).loss(logits_of(model, proposal, batch_size), "margin").float()
        better = new < margin[active]
        queries[on_cpu] += 1
        margin[active] = torch.where(better, new, margin[active])
        x_best[active] = torch.where(better.view(-1, 1, 1, 1), proposal, best)
    return x_best, queries


def _check(args: dict[str, Any]) -> None:
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
def square(a: Prepared, *, n_queries: int = 1000, p_init: float = 0.8, seed: int = 0, batch_size: int = 1000,
           bounds: Bounds = (0.0, 1.0)) -> Run:
    """Square Attack (L∞) at each ε: a fixed-budget result, x_adv [K, N, ...] and success [K, N] (fresh forward
    pass); extras["queries"] [K, N] counts the model queries each image used (≤ n_queries).

    Gradient-free: a check that gradient attacks are not fooled by masked gradients (it should not beat PGD)."""
    x, crit, eps = a.x, a.criterion, a.budgets
    assert eps is not None
    gen = torch.Generator().manual_seed(seed)
    x_adv = torch.empty((len(eps), *x.shape), device=x.device, dtype=x.dtype)
    queries = torch.zeros((len(eps), x.shape[0]), dtype=torch.long)
    with torch.no_grad():
        for k, e in enumerate(eps):
            for i in range(0, x.shape[0], batch_size):
                sl = slice(i, i + batch_size)
                x_adv[k, sl], queries[k, sl] = _run(a.model, x[sl], crit.subset(sl), e, n_queries=n_queries,
                                                    p_init=p_init, gen=gen, bounds=bounds, batch_size=batch_size)
    return Run(x_adv, measures=a.assess(x, x_adv, crit, per_budget=True), extras={"queries": queries.to(x.device)},
               params={"norm": "linf", "loss": "margin"})
