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

from ..errors import InputError
from .base import (AttackResult, attack_mode, build_result, check_budgets, check_int, check_positive, logits_of,
                   measure, prepare)
from .criteria import Criterion


def _loss(logits: Tensor, criterion: Criterion) -> Tensor:
    """Summed per-sample loss whose gradient sign is the FGSM step: J(y), or −J(t) when targeted."""
    if criterion.targets is not None:
        return -F.cross_entropy(logits, criterion.targets, reduction="sum")
    assert criterion.labels is not None
    return F.cross_entropy(logits, criterion.labels, reduction="sum")


def _batch_sign(model: nn.Module, xb: Tensor, criterion: Criterion) -> Tensor:
    xb = xb.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xb)
        (grad,) = torch.autograd.grad(_loss(logits, criterion), xb)
    if not bool(torch.isfinite(logits).all()):
        raise InputError("the model returns NaN or infinite logits on these images; check the model and inputs.")
    return grad.sign_()


def gradient_sign(model: nn.Module, x: Tensor, criterion: Criterion, batch_size: int = 1000) -> Tensor:
    """The FGSM step direction: sign(∇J(y)) untargeted, −sign(∇J(t)) targeted (call in attack_mode)."""
    return torch.cat([_batch_sign(model, x[i:i + batch_size], criterion.subset(slice(i, i + batch_size)))
                      for i in range(0, x.shape[0], batch_size)])


def fgsm(model: nn.Module, images: Tensor, criterion: Criterion, epsilons: Sequence[float], *,
         batch_size: int = 1000) -> AttackResult:
    """FGSM at each ε: a fixed-budget result with x_adv [K, N, ...] and success [K, N].

    Works batch by batch: one forward+backward gives the sign, then each ε's images are made and checked
    by a fresh forward pass while they are still in cache. result.error_rate() and
    result.mean_wrong_confidence() are Goodfellow's two metrics.
    """
    eps = check_budgets(epsilons, "epsilons")
    check_int("batch_size", batch_size)
    t0 = time.perf_counter()
    with attack_mode(model):
        x, crit, _ = prepare(model, images, criterion, batch_size, clean_logits=False)
        assert crit is not None
        x_adv = torch.empty((len(eps), *x.shape), device=x.device, dtype=x.dtype)
        parts: list[list[list[Tensor]]] = [[[] for _ in eps] for _ in range(6)]  # [field][budget][batch]
        workspace = torch.empty_like(x[:batch_size])
        for i in range(0, x.shape[0], batch_size):
            sl = slice(i, i + batch_size)
            xb, cb = x[sl], crit.subset(sl)
            step = _batch_sign(model, xb, cb)
            for j, e in enumerate(eps):
                adv = torch.add(xb, step, alpha=e, out=x_adv[j, sl]).clamp_(0, 1)
                for field, t in zip(parts, measure(model, xb, adv, cb, batch_size=batch_size, workspace=workspace)):
                    field[j].append(t)
    measures = tuple(torch.stack([torch.cat(per_batch) for per_batch in field]) for field in parts)
    params = {"epsilons": list(eps), "loss": "cross-entropy", "targeted": crit.targets is not None}
    return build_result(model, x, x_adv, crit, attack="fgsm", params=params, budgets=eps,
                        wall_time=time.perf_counter() - t0, measures=measures)  # type: ignore[arg-type]


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
        x, crit, clean_logits = prepare(model, images, criterion, batch_size)
        assert crit is not None
        step = gradient_sign(model, x, crit, batch_size)
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
