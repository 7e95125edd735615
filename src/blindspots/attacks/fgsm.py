"""Goodfellow et al.'s fast gradient sign method, for a list of ε, and its per-sample minimal ε.

x' = clip(x − ε·sign(∇ₓ L(x)), lo, hi) with L the criterion's cross-entropy loss (lower = more
adversarial): for Misclassification −log(1 − p_y), whose gradient is parallel to that of the paper's
J(θ, x, y), so the sign is Goodfellow's x + ε·sign(∇J(y)); for a target t, J(t), so x − ε·sign(∇J(t)).
One forward+backward pass per image gives the sign; each ε then costs one forward pass (the re-check).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from .base import Bounds, Prepared, Run, attack, check_int, check_positive, logits_of
from .criteria import Criterion


def loss_gradient(model: nn.Module, xb: Tensor, criterion: Criterion, kind: str = "ce") -> tuple[Tensor, Tensor]:
    """(∇ₓ of the criterion's per-sample loss summed over the batch, the logits at xb)."""
    xb = xb.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xb)
        (grad,) = torch.autograd.grad(criterion.loss(logits, kind).sum(), xb)
    if not bool(torch.isfinite(logits).all()):
        raise InputError("the model returns NaN or infinite logits on these images; check the model and inputs.")
    return grad, logits.detach()


def _batch_sign(model: nn.Module, xb: Tensor, criterion: Criterion) -> tuple[Tensor, Tensor]:
    """(the FGSM step −sign(∇L), the clean logits)."""
    grad, logits = loss_gradient(model, xb, criterion)
    return grad.sign_().neg_(), logits


def gradient_sign(model: nn.Module, x: Tensor, criterion: Criterion, batch_size: int = 1000) -> Tensor:
    """The FGSM step direction: sign(∇J(y)) untargeted, −sign(∇J(t)) targeted (call in attack_mode)."""
    return torch.cat([_batch_sign(model, x[i:i + batch_size], criterion.subset(slice(i, i + batch_size)))[0]
                      for i in range(0, x.shape[0], batch_size)])


def _check_batch(args: dict[str, Any]) -> None:
    check_int("batch_size", args["batch_size"])


@attack("fgsm", budgets="epsilons", check=_check_batch, clean_logits=False)
def fgsm(a: Prepared, *, batch_size: int = 1000, bounds: Bounds = (0.0, 1.0)) -> Run:
    """FGSM at each ε: a fixed-budget result with x_adv [K, N, ...] and success [K, N].

    Works batch by batch: one forward+backward gives the sign, then each ε's images are made and checked
    by a fresh forward pass while they are still in cache. result.error_rate() and
    result.mean_wrong_confidence() are Goodfellow's two metrics.
    """
    x, crit, eps = a.x, a.criterion, a.budgets
    assert eps is not None
    clean: list[Tensor] = []
    x_adv = torch.empty((len(eps), *x.shape), device=x.device, dtype=x.dtype)
    parts: list[list[list[Tensor]]] = [[[] for _ in eps] for _ in range(6)]  # [field][budget][batch]
    workspace = torch.empty_like(x[:batch_size])
    for i in range(0, x.shape[0], batch_size):
        sl = slice(i, i + batch_size)
        xb, cb = x[sl], crit.subset(sl)
        step, logits = _batch_sign(a.model, xb, cb)
        clean.append(logits)
        for j, e in enumerate(eps):
            adv = torch.add(xb, step, alpha=e, out=x_adv[j, sl]).clamp_(*bounds)
            for field, t in zip(parts, a.assess(xb, adv, cb, workspace=workspace)):
                field[j].append(t)
    measures = tuple(torch.stack([torch.cat(per_batch) for per_batch in field]) for field in parts)
    return Run(x_adv, measures=measures, clean_logits=torch.cat(clean),  # type: ignore[arg-type]
               params={"loss": "cross-entropy", "targeted": crit.targets is not None})


def _check_min(args: dict[str, Any]) -> None:
    check_positive("eps_max", args["eps_max"])
    check_int("steps", args["steps"])
    check_int("batch_size", args["batch_size"])


@attack("fgsm-min-epsilon", check=_check_min)
def fgsm_min_epsilon(a: Prepared, *, eps_max: float = 1.0, steps: int = 14, batch_size: int = 1000,
                     bounds: Bounds = (0.0, 1.0)) -> Run:
    """Per-sample smallest ε at which the FGSM image meets the criterion, by bisection on [0, eps_max].

    The gradient sign is taken once at x (as in FGSM). A minimal result: x_adv [N, ...] is the image at
    the smallest successful ε found, extras["epsilon"] that ε (inf where even eps_max fails, 0 for images
    already adversarial). Success need not be monotone in ε; bisection finds one crossing, accurate to
    eps_max / 2**steps. result.at(budgets, norm="linf") gives an error-vs-ε curve.
    """
    model, x, crit = a.model, a.x, a.criterion
    step = gradient_sign(model, x, crit, batch_size)
    n = x.shape[0]
    view = (-1, *([1] * (x.dim() - 1)))

    def succeeds(eps: Tensor) -> Tensor:
        return crit.is_adversarial(logits_of(model, (x + eps.view(view) * step).clamp(*bounds), batch_size))

    clean = crit.is_adversarial(a.clean_logits)
    hi = torch.full((n,), float(eps_max), device=x.device, dtype=x.dtype)
    lo = torch.zeros_like(hi)
    found = clean | succeeds(hi)
    hi = torch.where(clean, lo, hi)
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok = succeeds(mid)
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    x_adv = (x + hi.view(view) * step).clamp(*bounds)
    epsilon = torch.where(found, hi.double(), torch.full_like(hi, math.inf, dtype=torch.float64))
    return Run(x_adv, extras={"epsilon": epsilon, "clean_adversarial": clean},
               params={"targeted": crit.targets is not None})
