"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks"), L∞ or L2, at a list of budgets ε: PGD with momentum 0.75 and a step size that needs no
tuning.

The step starts at η = 2ε and is halved at checkpoints w_j = p_j·steps (p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06); `checkpoints`) when, since the last checkpoint, (1) the loss rose in fewer
than ρ = 0.75 of the steps, or (2) neither the step nor the best loss changed; after a halving the run
restarts from the best point so far. Losses (maximised): "ce", the cross-entropy (of the label, or minus that
of the target for a TargetedMisclassification), and "dlr", the Difference of Logits Ratio
−(z_y − max_{j≠y} z_j)/(z_π1 − z_π3) (targeted: −(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2)), which is invariant to
the logits' scale, so it does not saturate where the cross-entropy does (e.g. logits × 1000). `eot` averages
each gradient over that many forward passes, for randomised models (expectation over transformation).

Each image keeps the first adversarial iterate found (else the iterate of highest loss); restarts attack
only the images still robust. Random starts come from one CPU generator seeded with `seed`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import InputError
from .base import Bounds, Prepared, Run, attack, check_choice, check_int
from .criteria import Criterion

APGD_NORMS = ("linf", "l2")
APGD_LOSSES = ("ce", "dlr")


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step, in the reference implementation's integer form of the
    paper's p_j: the first after ⌊0.22·steps⌋, each next period ⌊0.03·steps⌋ shorter, never below ⌊0.06·steps⌋."""
    period, shrink, least = (max(int(f * steps), 1) for f in (0.22, 0.03, 0.06))
    marks, k = [], period
    while k <= steps:
        marks.append(k)
        period = max(period - shrink, least)
        k += period
    return marks


def apgd_loss(logits: Tensor, crit: Criterion, kind: str) -> Tensor:
    """Per-image loss to maximise: cross-entropy or DLR (untargeted, or targeted when the criterion has targets)."""
    if crit.targets is not None:
        t = crit.targets
        if kind == "ce":
            return -F.cross_entropy(logits, t, reduction="none")
        if crit.labels is None:
            raise InputError("targeted APGD-DLR needs the true labels too: TargetedMisclassification(targets, labels).")
        z = logits.sort(dim=1)[0]
        own, target = logits.gather(1, crit.labels.view(-1, 1))[:, 0], logits.gather(1, t.view(-1, 1))[:, 0]
        return -(own - target) / (z[:, -1] - 0.5 * (z[:, -3] + z[:, -4]) + 1e-12)
    assert crit.labels is not None
    y = crit.labels
    if kind == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    z = logits.sort(dim=1)[0]
    own = logits.gather(1, y.view(-1, 1))[:, 0]
    rival = logits.scatter(1, y.view(-1, 1), float("-inf")).amax(1)
    return -(own - rival) / (z[:, -1] - z[:, -3] + 1e-12)


def _grad(model: nn.Module, x: Tensor, crit: Criterion, kind: str, eot: int) -> tuple[Tensor, Tensor, Tensor]:
    """(loss [N], gradient, adversarial [N]) averaged over `eot` forward passes."""
    total_loss, total_grad, adv = torch.zeros(x.shape[0], device=x.device), torch.zeros_like(x), None
    for _ in range(eot):
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xg)
            loss = apgd_loss(logits, crit, kind)
            (g,) = torch.autograd.grad(loss.sum(), xg)
        total_loss += loss.detach().float()
        total_grad += g
        hit = crit.is_adversarial(logits.detach())
        adv = hit if adv is None else adv & hit  # adversarial on every draw
    assert adv is not None
    return total_loss / eot, total_grad / eot, adv


def _project(x: Tensor, x0: Tensor, eps: float, norm: str, bounds: Bounds) -> Tensor:
    d = x - x0
    if norm == "linf":
        d = d.clamp(-eps, eps)
    else:
        size = d.flatten(1).norm(dim=1).clamp(min=1e-12)
        d = d * (eps / size).clamp(max=1).view(-1, *([1] * (x.dim() - 1)))
    return (x0 + d).clamp(*bounds)


def _step(g: Tensor, norm: str) -> Tensor:
    if norm == "linf":
        return g.sign()
    return g / g.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *([1] * (g.dim() - 1)))


def _run(model: nn.Module, x0: Tensor, crit: Criterion, eps: float, start: Tensor, *, norm: str, loss: str,
         steps: int, rho: float, momentum: float, eot: int, bounds: Bounds) -> tuple[Tensor, Tensor]:
    """One APGD run from x0 + start: (example [N, ...], found adversarial [N])."""
    n = x0.shape[0]
    view = (-1, *([1] * (x0.dim() - 1)))
    eta = torch.full((n,), 2 * eps, device=x0.device, dtype=x0.dtype)
    x = _project(x0 + start, x0, eps, norm, bounds)
    f, g, hit = _grad(model, x, crit, loss, eot)
    x_best, f_best, g_best = x.clone(), f.clone(), g.clone()
    x_adv, found = torch.where(hit.view(view), x, x0), hit.clone()
    x_prev = x.clone()
    marks = checkpoints(steps)
    rises = torch.zeros(n, device=x0.device)
    last_mark, eta_at_mark, fbest_at_mark = 0, eta.clone(), f_best.clone()
    for k in range(steps):
        z = _project(x + eta.view(view) * _step(g, norm), x0, eps, norm, bounds)
        a = 1.0 if k == 0 else momentum
        x_new = _project(x + a * (z - x) + (1 - a) * (x - x_prev), x0, eps, norm, bounds)
        x_prev = x
        f_new, g_new, hit = _grad(model, x_new, crit, loss, eot)
        newly = hit & ~found
        x_adv[newly] = x_new[newly]
        found |= hit
        rises += (f_new > f).float()
        better = f_new > f_best
        x_best[better], f_best[better], g_best[better] = x_new[better], f_new[better], g_new[better]
        x, f, g = x_new, f_new, g_new
        if k + 1 in marks:
            span = k + 1 - last_mark
            halve = (rises < rho * span) | ((eta == eta_at_mark) & (f_best == fbest_at_mark))
            eta_at_mark, fbest_at_mark = eta.clone(), f_best.clone()
            eta = torch.where(halve, eta / 2, eta)
            x = torch.where(halve.view(view), x_best, x)  # restart from the best point
            g = torch.where(halve.view(view), g_best, g)
            x_prev = torch.where(halve.view(view), x, x_prev)
            rises.zero_()
            last_mark = k + 1
    return torch.where(found.view(view), x_adv, x_best), found


def _check(args: dict[str, Any]) -> None:
    check_choice("norm", args["norm"], APGD_NORMS)
    check_choice("loss", args["loss"], APGD_LOSSES)
    for name in ("steps", "restarts", "eot", "batch_size"):
        check_int(name, args[name])
    check_int("seed", args["seed"], 0)
    rho, momentum = args["rho"], args["momentum"]
    if not (0 < rho <= 1 and 0 < momentum <= 1):
        raise InputError(f"rho and momentum must lie in (0, 1], got rho={rho!r}, momentum={momentum!r}.")


@attack("apgd", budgets="epsilons", check=_check)
def apgd(a: Prepared, *, norm: str = "linf", loss: str = "ce", steps: int = 100, restarts: int = 1, rho: float = 0.75,
         momentum: float = 0.75, eot: int = 1, seed: int = 0, batch_size: int = 1000,
         bounds: Bounds = (0.0, 1.0)) -> Run:
    """APGD at each ε: a fixed-budget result, x_adv [K, N, ...] and success [K, N] (fresh forward pass).

    A TargetedMisclassification criterion makes it targeted (with loss="dlr" it needs the labels too)."""
    model, x, crit, eps, clean_logits = a.model, a.x, a.criterion, a.budgets, a.clean_logits
    assert eps is not None
    if loss == "dlr" and clean_logits.shape[1] < (4 if crit.targets is not None else 3):
        raise InputError(f"the DLR loss needs at least {4 if crit.targets is not None else 3} classes; "
                         f"the model has {clean_logits.shape[1]}: use loss='ce'.")
    gen = torch.Generator().manual_seed(seed)
    x_adv = x.unsqueeze(0).repeat(len(eps), *([1] * x.dim()))
    for k, e in enumerate(eps):
        done = crit.is_adversarial(clean_logits)
        for _ in range(restarts):
            if e == 0:
                break
            if norm == "linf":
                start = (torch.rand(x.shape, generator=gen) * 2 - 1).to(x) * e
            else:
                d = torch.randn(x.shape, generator=gen).to(x)
                start = d / d.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *([1] * (x.dim() - 1))) * e
            todo = (~done).nonzero().flatten()
            for i in range(0, todo.numel(), batch_size):
                idx = todo[i:i + batch_size]
                adv, ok = _run(model, x[idx], crit.subset(idx), e, start[idx], norm=norm, loss=loss,
                               steps=steps, rho=rho, momentum=momentum, eot=eot, bounds=bounds)
                keep = ok | (x_adv[k, idx] == x[idx]).flatten(1).all(1)  # a success, or the first run's best
                x_adv[k, idx[keep]] = adv[keep]
                done[idx[ok]] = True
            if bool(done.all()):
                break
    return Run(x_adv, measures=a.assess(x, x_adv, crit, per_budget=True), attack=f"apgd-{loss}-{norm}")


__all__ = ["apgd", "apgd_loss", "checkpoints", "APGD_NORMS", "APGD_LOSSES"]
