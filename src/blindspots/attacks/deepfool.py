"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016), L2, batched: a minimal attack.

Untargeted (the paper's Algorithm 2): at the current point, linearise every candidate class k ≠ y,
f_k = z_k − z_y with w_k = ∇f_k, pick l = argmin_k |f_k| / ‖w_k‖₂ (the nearest linearised boundary),
and add r = (|f_l| + 1e-4) / ‖w_l‖² · w_l to the total perturbation; the next point is
x + (1 + overshoot)·r_tot, clipped to the bounds. An image stops as soon as it meets the criterion (or
after `steps`). For an affine classifier away from the bounds, one step lands on the nearest boundary,
the exact minimal L2 perturbation, times (1 + overshoot).

With a target (or any other criterion) the step is the same Newton step on the criterion's logit margin
m (< 0 where it holds): r = (|m| + 1e-4) / ‖∇m‖² · (−∇m), the paper's binary-class case.
`candidates` limits the classes linearised to the top ones of the clean logits (all by default).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import Bounds, Prepared, Run, attack, check_int, check_nonnegative
from .criteria import Criterion

NUDGE = 1e-4  # the paper's small constant added to each step, so the boundary is crossed, not touched


def _step_multiclass(model: nn.Module, x: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
    """(DeepFool step r [n, ...], logits at x) over the candidate classes [n, k] (column 0 the label)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        picked = logits.gather(1, classes)
        grads = [torch.autograd.grad(picked[:, j].sum(), x, retain_graph=j + 1 < classes.shape[1])[0].flatten(1)
                 for j in range(classes.shape[1])]
    g = torch.stack(grads, dim=1)  # [n, k, D]
    w = g[:, 1:] - g[:, :1]
    f = (picked[:, 1:] - picked[:, :1]).detach()
    wn = w.norm(dim=2).clamp(min=1e-12)
    best = (f.abs() / wn).argmin(dim=1)
    rows = torch.arange(x.shape[0], device=x.device)
    scale = (f[rows, best].abs() + NUDGE) / wn[rows, best] ** 2
    return (scale.unsqueeze(1) * w[rows, best]).view_as(x), logits.detach()


def _step_margin(model: nn.Module, x: Tensor, criterion: Criterion) -> tuple[Tensor, Tensor]:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        m = criterion.loss(logits, "margin")
        (g,) = torch.autograd.grad(m.sum(), x)
    gn = g.flatten(1).norm(dim=1).clamp(min=1e-12)
    scale = (m.detach().abs() + NUDGE) / gn ** 2
    return -(g * scale.view(-1, *([1] * (g.dim() - 1)))), logits.detach()


def _check(args: dict[str, Any]) -> None:
    check_int("steps", args["steps"])
    check_nonnegative("overshoot", args["overshoot"])
    check_int("batch_size", args["batch_size"])
    if args["candidates"] is not None:
        check_int("candidates", args["candidates"], 2)


@attack("deepfool", check=_check)
def deepfool(a: Prepared, *, steps: int = 50, overshoot: float = 0.02, candidates: int | None = None,
             batch_size: int = 1000, bounds: Bounds = (0.0, 1.0)) -> Run:
    """Minimal L2 DeepFool: x_adv [N, ...]; extras "iterations" (steps taken per image)."""
    model, x, crit, clean_logits = a.model, a.x, a.criterion, a.clean_logits
    n, n_classes = x.shape[0], clean_logits.shape[1]
    k = n_classes if candidates is None else min(candidates, n_classes)
    multiclass = crit.targets is None and crit.labels is not None
    classes = None
    if multiclass:
        assert crit.labels is not None
        others = clean_logits.scatter(1, crit.labels.unsqueeze(1), float("-inf")).topk(k - 1, dim=1).indices
        classes = torch.cat([crit.labels.unsqueeze(1), others], dim=1)
    x_adv = x.clone()
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    for i in range(0, n, batch_size):
        sl = slice(i, i + batch_size)
        x0, cb = x[sl], crit.subset(sl)
        r_tot = torch.zeros_like(x0)
        active = torch.arange(x0.shape[0], device=x.device)
        for _ in range(steps + 1):
            point = (x0[active] + (1 + overshoot) * r_tot[active]).clamp_(*bounds)
            if multiclass:
                assert classes is not None
                r, logits = _step_multiclass(model, point, classes[sl][active])
            else:
                r, logits = _step_margin(model, point, cb.subset(active))
            done = cb.subset(active).is_adversarial(logits)
            x_adv[sl][active[done]] = point[done]
            active, r = active[~done], r[~done]
            if active.numel() == 0 or int(iterations[sl][active].max()) >= steps:
                x_adv[sl][active] = point[~done]
                break
            r_tot[active] += r
            iterations[sl][active] += 1
    return Run(x_adv, extras={"iterations": iterations}, params={"candidates": k})
