"""Goodfellow et al.'s fast gradient sign method, for a list of ε, and its per-sample minimal ε.

x' = clip(x + ε·sign(∇ₓ J(θ, x, y)), 0, 1) with J the per-sample cross-entropy of the true label; the
targeted variant steps against the target's loss, x' = clip(x − ε·sign(∇ₓ J(θ, x, t)), 0, 1). One
forward+backward pass per image gives the sign; each ε then costs one forward pass (the re-check).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import (AttackResult, attack_mode, build_result, check_budgets, check_int, check_positive, logits_of,
                   prepare)
from .criteria import Criterion


def gradient_sign(model: nn.Module, x: Tensor, criterion: Criterion, batch_size: int = 1000) -> Tensor:
    """The FGSM step direction: sign(∇J(y)) untargeted, −sign(∇J(t)) targeted (call in attack_mode)."""
    out = torch.empty_like(x)
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].detach().requires_grad_(True)
        crit = criterion.subset(slice(i, i + batch_size))
        with torch.enable_grad():
            logits = model(xb)
            if crit.targets is not None:
                loss = -F.cross_entropy(logits, crit.targets, reduction="sum")
            else:
                assert crit.labels is not None
                loss = F.cross_entropy(logits, crit.labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xb)
        out[i:i + batch_size] = grad.sign()
    return out


def _signed_step(model: nn.Module, images: Tensor, criterion: Criterion,
                 batch_size: int) -> tuple[Tensor, Criterion, Tensor, Tensor]:
    """Validated (x, criterion, clean logits, FGSM step direction); call inside attack_mode."""
    x, crit, clean_logits = prepare(model, images, criterion, batch_size)
    assert crit is not None
    return x, crit, clean_logits, gradient_sign(model, x, crit, batch_size)


def fgsm(model: nn.Module, images: Tensor, criterion: Criterion, epsilons: Sequence[float], *,
         batch_size: int = 1000) -> AttackResult:
    """FGSM at each ε: a fixed-budget result with x_adv [K, N, ...] and success [K, N].

    result.error_rate() and result.mean_wrong_confidence() are Goodfellow's two metrics.
    """
    eps = check_budgets(epsilons, "epsilons")
    check_int("batch_size", batch_size)
    t0 = time.perf_counter()
    with attack_mode(model):
        x, crit, _, step = _signed_step(model, images, criterion, batch_size)
        e = torch.tensor(eps, device=x.device, dtype=x.dtype).view(-1, *([1] * x.dim()))
        x_adv = (x.unsqueeze(0) + e * step.unsqueeze(0)).clamp_(0, 1)
    params = {"epsilons": list(eps), "loss": "cross-entropy", "targeted": crit.targets is not None}
    return build_result(model, x, x_adv, crit, attack="fgsm", params=params, budgets=eps,
                        wall_time=time.perf_counter() - t0, batch_size=batch_size)


def fgsm_min_epsilon(model: nn.Module, images: Tensor, criterion: Criterion, *, eps_max: float = 1.0,
                     steps: int = 14, batch_size: int = 1000) -> AttackResult:
    """Per-sample smallest ε at which the FGSM image meets the criterion, by bisection on [0, eps_max].

    The gradient sign is taken once at x (as in FGSM). A minimal result: x_adv [N, ...] is the image at
    the smallest successful ε found, extras["epsilon"] that ε (inf where even eps_max fails, 0 for images
    already adversarial). Success need not be monotone in ε; bisection finds one crossing, accurate to
    eps_max / 2**steps. Clip the result with clip_to(budgets, norm="linf") for an error-vs-ε curve.
    """
    check_positive("eps_max", eps_max)
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    t0 = time.perf_counter()
    with attack_mode(model):
        x, crit, clean_logits, step = _signed_step(model, images, criterion, batch_size)
        n = x.shape[0]
        view = (-1, *([1] * (x.dim() - 1)))

        def succeeds(eps: Tensor) -> Tensor:
            return crit.is_adversarial(logits_of(model, (x + eps.view(view) * step).clamp(0, 1), batch_size))

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
        x_adv = (x + hi.view(view) * step).clamp(0, 1)
    epsilon = torch.where(found, hi.double(), torch.full_like(hi, math.inf, dtype=torch.float64))
    params = {"eps_max": eps_max, "steps": steps, "targeted": crit.targets is not None}
    return build_result(model, x, x_adv, crit, attack="fgsm-min-epsilon", params=params,
                        wall_time=time.perf_counter() - t0, batch_size=batch_size,
                        extras={"epsilon": epsilon, "clean_adversarial": clean})
