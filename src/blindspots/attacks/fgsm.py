"""Goodfellow et al.'s fast gradient sign method, for a list of ε, and its per-sample minimal ε.

x' = clip(x − ε·sign(∇ₓ L(x)), lo, hi) with L the criterion's cross-entropy loss (lower = more
adversarial): for Misclassification −log(1 − p_y), whose gradient is parallel to that of the paper's
J(θ, x, y), so the sign is Goodfellow's x + ε·sign(∇J(y)); for a target t, J(t), so x − ε·sign(∇J(t)).
One forward+backward pass per image gives the sign; each ε then costs one forward pass (the re-check).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import InputError
from .base import (AttackResult, Bounds, as_model, attack_mode, build_result, check_bounds, check_budgets, check_int,
                   check_positive, logits_of, measure, prepare)
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


def fgsm(model: nn.Module, images: Tensor, criterion: Criterion, epsilons: Sequence[float], *,
         batch_size: int = 1000, bounds: Bounds = (0.0, 1.0)) -> AttackResult:
    """FGSM at each ε: a fixed-budget result with x_adv [K, N, ...] and success [K, N].

    Works batch by batch: one forward+backward gives the sign, then each ε's images are made and checked
    by a fresh forward pass while they are still in cache. result.error_rate() and
    result.mean_wrong_confidence() are Goodfellow's two metrics.
    """
    eps = check_budgets(epsilons, "epsilons")
    check_int("batch_size", batch_size)
    bounds = check_bounds(bounds)
    t0 = time.perf_counter()
    model = as_model(model)
    with attack_mode(model):
        x, crit, _ = prepare(model, images, criterion, batch_size, clean_logits=False, bounds=bounds)
        clean: list[Tensor] = []
        x_adv = torch.empty((len(eps), *x.shape), device=x.device, dtype=x.dtype)
        parts: list[list[list[Tensor]]] = [[[] for _ in eps] for _ in range(6)]  # [field][budget][batch]
        workspace = torch.empty_like(x[:batch_size])
        for i in range(0, x.shape[0], batch_size):
            sl = slice(i, i + batch_size)
            xb, cb = x[sl], crit.subset(sl)
            step, logits = _batch_sign(model, xb, cb)
            clean.append(logits)
            for j, e in enumerate(eps):
                adv = torch.add(xb, step, alpha=e, out=x_adv[j, sl]).clamp_(*bounds)
                for field, t in zip(parts, measure(model, xb, adv, cb, batch_size=batch_size, workspace=workspace)):
                    field[j].append(t)
    measures = tuple(torch.stack([torch.cat(per_batch) for per_batch in field]) for field in parts)
    params = {"epsilons": list(eps), "loss": "cross-entropy", "targeted": crit.targets is not None,
              "bounds": list(bounds)}
    return build_result(model, x, x_adv, crit, attack="fgsm", params=params, budgets=eps,
                        wall_time=time.perf_counter() - t0, measures=measures,  # type: ignore[arg-type]
                        clean_logits=torch.cat(clean), bounds=bounds)


def fgsm_min_epsilon(model: nn.Module, images: Tensor, criterion: Criterion, *, eps_max: float = 1.0,
                     steps: int = 14, batch_size: int = 1000, bounds: Bounds = (0.0, 1.0)) -> AttackResult:
    """Per-sample smallest ε at which the FGSM image meets the criterion, by bisection on [0, eps_max].

    The gradient sign is taken once at x (as in FGSM). A minimal result: x_adv [N, ...] is the image at
    the smallest successful ε found, extras["epsilon"] that ε (inf where even eps_max fails, 0 for images
    already adversarial). Success need not be monotone in ε; bisection finds one crossing, accurate to
    eps_max / 2**steps. result.at(budgets, norm="linf") gives an error-vs-ε curve.
    """
    check_positive("eps_max", eps_max)
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    bounds = check_bounds(bounds)
    t0 = time.perf_counter()
    model = as_model(model)
    with attack_mode(model):
        x, crit, clean_logits = prepare(model, images, criterion, batch_size, bounds=bounds)
        step = gradient_sign(model, x, crit, batch_size)
        n = x.shape[0]
        view = (-1, *([1] * (x.dim() - 1)))

        def succeeds(eps: Tensor) -> Tensor:
            return crit.is_adversarial(logits_of(model, (x + eps.view(view) * step).clamp(*bounds), batch_size))

        clean = crit.is_adversarial(clean_logits)
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
    params = {"eps_max": eps_max, "steps": steps, "targeted": crit.targets is not None, "bounds": list(bounds)}
    return build_result(model, x, x_adv, crit, attack="fgsm-min-epsilon", params=params,
                        wall_time=time.perf_counter() - t0, batch_size=batch_size,
                        extras={"epsilon": epsilon, "clean_adversarial": clean}, clean_logits=clean_logits,
                        bounds=bounds)
