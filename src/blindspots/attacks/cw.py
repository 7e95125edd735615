"""Carlini & Wagner's L2 attack (IEEE S&P 2017), a minimal attack with a search over c.

For each c: minimise ‖x' − x‖₂² + c'·max(m(x'), −κ) by Adam for `steps` iterations, where m is the
criterion's logit margin (their f₆: max_{j≠t} z_j − z_t targeted, z_y − max_{j≠y} z_j untargeted) and κ
the confidence. x' = lo + (hi − lo)·(tanh(w) + 1)/2 (their change of variables; w starts at the clean
image) or, with parametrisation="projected", x' = clip(x + δ) after each step. Every iterate the forward
pass shows to meet the criterion is a candidate; the smallest is kept. Adam's step starts at lr = 0.1
and decays along a cosine to lr/100 over each solve: their constant 0.01 needs about ten times more steps
on MNIST, where most pixels sit at a bound and tanh starts saturated (measured on softmax regression,
64 images, 100 steps: 78% success at a constant 0.01), and a constant 0.1 oscillates ~5% above the
minimum on mid-grey pixels.

The c search is attacks.csearch, shared with the L-BFGS attack, on c = 1/c' (the objective is scaled by
c, which Adam does not see): bracket by factors of 10 from c_init, then bisect in log space
`search_steps` times (Carlini & Wagner bisect c' linearly after the bracket; their c' = 1e-3 start is
c_init = 1000).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import Bounds, Prepared, Run, attack, check_choice, check_int, check_nonnegative, check_positive, verified
from .criteria import Criterion
from .csearch import CSearch

PARAMETRISATIONS = ("tanh", "projected")
TANH_SHRINK = 1 - 1e-6  # keeps atanh finite at the bounds


def _solve(model: nn.Module, x0: Tensor, image_shape: torch.Size, criterion: Criterion, c: Tensor, *, steps: int,
           lr: float, confidence: float, parametrisation: str, bounds: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """One Adam run per row at its c [n]: (the smallest verified success per row, else the last iterate;
    found [n])."""
    lo, hi = bounds
    if parametrisation == "tanh":
        var = torch.atanh(((x0 - lo) / (hi - lo) * 2 - 1) * TANH_SHRINK)
    else:
        var = torch.zeros_like(x0)
    var.requires_grad_(True)
    opt = torch.optim.Adam([var], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 100)
    best_x, best_d = x0.clone(), torch.full((x0.shape[0],), float("inf"), device=x0.device, dtype=torch.float64)
    cw = c.to(x0.dtype)
    for _ in range(steps + 1):
        with torch.enable_grad():
            xs = lo + (hi - lo) * (torch.tanh(var) + 1) / 2 if parametrisation == "tanh" else x0 + var
            logits = model(xs.view(xs.shape[0], *image_shape))
            margin = criterion.loss(logits, "margin")
            dist = (xs - x0).square().sum(dim=1)
            value = cw * dist + margin.clamp(min=-confidence)
            objective = value.sum()
        ok = verified(logits, criterion)
        better = ok & (dist.detach().double() < best_d)
        best_x[better], best_d[better] = xs.detach()[better], dist.detach().double()[better]
        last = xs.detach()
        opt.zero_grad(set_to_none=True)
        objective.backward()
        opt.step()
        sched.step()
        if parametrisation == "projected":
            with torch.no_grad():
                var.copy_((x0 + var).clamp_(lo, hi) - x0)
    found = torch.isfinite(best_d)
    return torch.where(found.unsqueeze(1), best_x, last), found


def _check(args: dict[str, Any]) -> None:
    check_int("steps", args["steps"])
    check_positive("lr", args["lr"])
    check_nonnegative("confidence", args["confidence"])
    check_positive("c_init", args["c_init"])
    check_int("search_steps", args["search_steps"], 0)
    check_int("bracket_steps", args["bracket_steps"], 0)
    check_int("batch_size", args["batch_size"])
    check_choice("parametrisation", args["parametrisation"], PARAMETRISATIONS)


@attack("cw-l2", check=_check)
def cw_l2(a: Prepared, *, steps: int = 100, lr: float = 0.1, confidence: float = 0.0, c_init: float = 1.0,
          search_steps: int = 5, bracket_steps: int = 5, parametrisation: str = "tanh", batch_size: int = 1000,
          bounds: Bounds = (0.0, 1.0)) -> Run:
    """Minimal C&W-L2: x_adv [N, ...]; extras "c" (this module's c = 1/c' that produced it, NaN on failure)
    and "solves"."""
    x, crit = a.x, a.criterion
    flat = x.reshape(x.shape[0], -1)
    clean = crit.is_adversarial(a.clean_logits)
    search = CSearch(flat, ~clean, c_init=c_init, search_steps=search_steps, bracket_steps=bracket_steps)
    while bool(search.todo.any()):
        rows = search.todo.nonzero().squeeze(1)[:batch_size]
        xs, ok = _solve(a.model, flat[rows], x.shape[1:], crit.subset(rows), search.c[rows], steps=steps, lr=lr,
                        confidence=confidence, parametrisation=parametrisation, bounds=bounds)
        search.record(rows, xs, ok, torch.full_like(rows, steps))
    out = search.outputs()
    return Run(out["x_adv"].view_as(x), extras={"c": out["c"], "solves": out["solves"]})
