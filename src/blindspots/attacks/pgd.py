"""Projected gradient descent (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks"), L∞ or L2, at a list of budgets ε.

For each ε and each of `restarts` runs: start at x + δ₀ (δ₀ uniform in the ε-ball when random_start, else
0), then `steps` times step against the gradient of the criterion's loss (lower = more adversarial):
x ← Π(x − α_t·sign(∇L)) for L∞, x ← Π(x − α_t·∇L/‖∇L‖₂) for L2, where Π projects onto the ε-ball around
the clean image and then onto the bounds. α_t = step_size (default 2.5·ε/steps, Madry et al.'s rule),
constant or decayed along a cosine (`schedule`). With several restarts, each image keeps the run whose
final logit margin is lowest (the most adversarial). The default loss "logodds" (z_y − logsumexp of the
other logits) has a gradient parallel to that of Madry et al.'s cross-entropy, so the sign steps are
theirs, but unlike the cross-entropy's it does not vanish in float32 once an image is confidently
wrong (the cross-entropy's own "ce" and Carlini & Wagner's "margin" are the other choices).

Random starts come from one CPU generator seeded with `seed`, drawn for the whole batch of N images in
the order budget, restart (torch.rand(N, ...) for L∞), so a run is reproducible on any device.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .base import Bounds, Prepared, Run, attack, check_choice, check_int, check_positive, logits_of
from .criteria import LOSSES, Criterion

PGD_NORMS = ("linf", "l2")
SCHEDULES = ("constant", "cosine")


def _per_row(t: Tensor, values: Tensor) -> Tensor:
    return values.view(-1, *([1] * (t.dim() - 1)))


def _radius(x: Tensor, eps: float | Tensor) -> float | Tensor:
    """ε as it broadcasts against x: a number, or one value per image (a tensor [N]) reshaped to [N, 1, ...]."""
    return _per_row(x, eps.to(x)) if isinstance(eps, Tensor) else eps


def _random_start(x: Tensor, eps: float | Tensor, norm: str, gen: torch.Generator) -> Tensor:
    """δ₀ uniform in the ε-ball: U(−ε, ε) per pixel for L∞; for L2 a uniform direction times ε·u^(1/D)."""
    if norm == "linf":
        return (torch.rand(x.shape, generator=gen, dtype=torch.float32).to(x) * 2 - 1) * _radius(x, eps)
    flat = torch.randn(x.shape[0], x[0].numel(), generator=gen, dtype=torch.float32)
    radius = torch.rand(x.shape[0], generator=gen, dtype=torch.float32) ** (1 / flat.shape[1])
    flat = flat / flat.norm(dim=1, keepdim=True).clamp(min=1e-12) * (eps * radius).unsqueeze(1)
    return flat.view_as(x).to(x)


def _project(x: Tensor, x0: Tensor, eps: float, bounds: Bounds) -> Tensor:
    """Onto the L2 ball of radius ε around x0, then the bounds."""
    delta = x - x0
    size = delta.flatten(1).norm(dim=1)
    scale = (eps / size.clamp(min=1e-12)).clamp(max=1)
    return (x0 + delta * _per_row(delta, scale)).clamp_(*bounds)


def _run(model: nn.Module, x0: Tensor, criterion: Criterion, start: Tensor, eps: float | Tensor, *, norm: str,
         steps: int, step_size: float | Tensor, schedule: str, loss: str, bounds: Bounds) -> Tensor:
    """The PGD iterations from x0 + start; eps and step_size are numbers, or (L∞ only) one value per image."""
    x = (x0 + start).clamp_(*bounds)
    if norm == "linf":  # the ε-box ∩ the bounds, once: each projection is then one clamp
        e = _radius(x0, eps)
        low, high = (x0 - e).clamp_(min=bounds[0]), (x0 + e).clamp_(max=bounds[1])
    for t in range(steps):
        alpha = step_size if schedule == "constant" else step_size * 0.5 * (1 + math.cos(math.pi * t / steps))
        x.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(criterion.loss(model(x), loss).sum(), x)
        x = x.detach()
        if norm == "linf" and isinstance(alpha, Tensor):
            x = x.sub_(_radius(x, alpha) * grad.sign_()).clamp_(low, high)
        elif norm == "linf":
            x = x.sub_(grad.sign_(), alpha=alpha).clamp_(low, high)
        else:
            size = grad.flatten(1).norm(dim=1).clamp(min=1e-12)
            x = _project(x.sub_(grad * _per_row(grad, alpha / size)), x0, eps, bounds)
    return x


def pgd_linf_per_image(model: nn.Module, x: Tensor, criterion: Criterion, eps: Tensor, *, steps: int,
                       gen: torch.Generator, bounds: Bounds = (0.0, 1.0), loss: str = "logodds") -> Tensor:
    """PGD-L∞ with one ε per image (eps [N]; random start, constant step 2.5·ε/steps): the final images only, for
    searches over ε such as a per-image bisection. A building block: the caller holds the model in attack_mode,
    checks success with a forward pass, and owns `gen` (the random starts are drawn from it)."""
    e = eps.to(x)
    return _run(model, x, criterion, _random_start(x, e, "linf", gen), e, norm="linf", steps=steps,
                step_size=2.5 * e / steps, schedule="constant", loss=loss, bounds=bounds)


def _check(args: dict[str, Any]) -> None:
    check_choice("norm", args["norm"], PGD_NORMS)
    check_choice("schedule", args["schedule"], SCHEDULES)
    check_choice("loss", args["loss"], LOSSES)
    check_int("steps", args["steps"])
    check_int("restarts", args["restarts"])
    check_int("batch_size", args["batch_size"])
    check_int("seed", args["seed"], 0)
    if args["step_size"] is not None:
        check_positive("step_size", args["step_size"])


@attack("pgd", budgets="epsilons", check=_check)
def pgd(a: Prepared, *, norm: str = "linf", steps: int = 40, step_size: float | None = None, restarts: int = 1,
        random_start: bool = True, schedule: str = "constant", loss: str = "logodds", seed: int = 0,
        batch_size: int = 1000, bounds: Bounds = (0.0, 1.0)) -> Run:
    """PGD at each ε: a fixed-budget result, x_adv [K, N, ...] and success [K, N] (fresh forward pass).

    step_size: absolute α (default 2.5·ε/steps for each ε); random_start: start inside the ball (Madry et
    al.) rather than at x."""
    model, x, crit, eps = a.model, a.x, a.criterion, a.budgets
    assert eps is not None
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    x_adv = torch.empty((len(eps), *x.shape), device=x.device, dtype=x.dtype)
    for k, e in enumerate(eps):
        alpha = step_size if step_size is not None else 2.5 * e / steps
        best_margin = torch.full((n,), math.inf, device=x.device)
        for _ in range(restarts):
            start = _random_start(x, e, norm, gen) if random_start else torch.zeros_like(x)
            for i in range(0, n, batch_size):
                sl = slice(i, i + batch_size)
                adv = _run(model, x[sl], crit.subset(sl), start[sl], e, norm=norm, steps=steps,
                           step_size=alpha, schedule=schedule, loss=loss, bounds=bounds)
                if restarts == 1:
                    x_adv[k, sl] = adv
                    continue
                margin = crit.subset(sl).loss(logits_of(model, adv, batch_size), "margin").float()
                better = margin < best_margin[sl]
                x_adv[k, sl][better] = adv[better]
                best_margin[sl] = torch.where(better, margin, best_margin[sl])
    return Run(x_adv, measures=a.assess(x, x_adv, crit, per_budget=True), attack=f"pgd-{norm}")
