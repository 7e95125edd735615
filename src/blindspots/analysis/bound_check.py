"""Checks that verify the Lipschitz bounds rather than assume them (Szegedy et al. 2014, §4.3).

`power_iteration_norm` estimates a layer's operator norm on the real layer by autograd (a certified lower estimate,
‖A v‖ for a unit v), `explicit_operator_norm` builds the matrix for small inputs, `empirical_ratio` /
`local_lipschitz` measure ‖f(x + r) − f(x)‖ / ‖r‖ on a model, and `bound_check` holds a whole-net bound against
adversarial pairs: the one check used by the report and by `blindspots spectral`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..models import predict, predict_logits

def _affine_to_linear(fn: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int],
                      dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """x ↦ fn(x) − fn(0); a module is run as an eval-mode CPU copy in `dtype`."""
    if isinstance(fn, nn.Module):
        fn = copy.deepcopy(fn).to("cpu", dtype).eval()
    with torch.no_grad():
        offset = fn(torch.zeros((1, *input_shape), dtype=dtype))
    return lambda x: fn(x) - offset


def power_iteration_norm(fn: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int],
                         iters: int = 100, seed: int = 0, dtype: torch.dtype = torch.float64) -> float:
    """Largest singular value of an affine map's linear part (fn(x) − fn(0)), by power iteration on AᵀA with
    autograd. Returns ‖A v‖ for the final unit vector v: never above the true value, converging to it.
    `fn` is any function of a batch [B, *input_shape] (an nn.Module is run as a `dtype` copy in eval mode)."""
    shape = tuple(int(s) for s in input_shape)
    lin = _affine_to_linear(fn, shape, dtype)
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn((1, *shape), generator=gen, dtype=dtype)
    v = v / v.norm()
    for _ in range(iters):
        v.requires_grad_(True)
        y = lin(v)
        (g,) = torch.autograd.grad(y, v, grad_outputs=y.detach())  # AᵀA v
        norm = g.norm()
        if norm == 0:
            return 0.0
        v = (g / norm).detach()
    with torch.no_grad():
        return float(lin(v).norm())


def explicit_operator_norm(fn: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int],
                           dtype: torch.dtype = torch.float64, max_inputs: int = 8192) -> float:
    """Largest singular value of the explicitly built matrix of an affine map's linear part (small inputs)."""
    shape = tuple(int(s) for s in input_shape)
    n = math.prod(shape)
    if n > max_inputs:
        raise InputError(f"an explicit matrix for {n} inputs is too large (limit {max_inputs}); use "
                         "power_iteration_norm for layers this size")
    lin = _affine_to_linear(fn, shape, dtype)
    with torch.no_grad():
        cols = lin(torch.eye(n, dtype=dtype).reshape(n, *shape)).reshape(n, -1)
    return float(torch.linalg.matrix_norm(cols.T, ord=2))


def _check_pairs(x: torch.Tensor, x_adv: torch.Tensor) -> None:
    if x.shape != x_adv.shape or x.dim() < 2:
        raise InputError(f"x and x_adv must be batches of the same shape, got {tuple(x.shape)} and "
                         f"{tuple(x_adv.shape)}")


def empirical_ratio(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Per pair ‖f(x_adv) − f(x)‖ / ‖x_adv − x‖ (ℓ2, on the model's outputs, eval mode): a lower estimate of the
    model's Lipschitz constant that `lipschitz_bound` must never fall below."""
    _check_pairs(x, x_adv)
    r = (x_adv - x).flatten(1).double().norm(dim=1).cpu()
    same = int((r == 0).sum())
    if same:
        raise InputError(f"{same} of {len(r)} pairs have x_adv == x (a failed attack?); the ratio is undefined "
                         "for them. Keep only the successful pairs, e.g. x[result.success].")
    diff = predict_logits(model, x_adv, batch_size) - predict_logits(model, x, batch_size)
    return diff.flatten(1).double().norm(dim=1) / r


def local_lipschitz(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Per input, ‖J_f(x)‖₂: the largest ratio ‖f(x + r) − f(x)‖/‖r‖ as r → 0. The Jacobian is built row by row
    (one backward pass per output, cheap for a classifier's 10 logits) and its largest singular value taken."""
    if x.dim() < 2:
        raise InputError(f"x must be a batch of inputs, got shape {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    norms = []
    try:
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(device).detach().requires_grad_(True)
            out = model(xb).flatten(1)
            rows = [torch.autograd.grad(out[:, j].sum(), xb, retain_graph=True)[0].flatten(1)
                    for j in range(out.shape[1])]
            jac = torch.stack(rows, dim=1).double()  # [n, outputs, inputs]
            norms.append(torch.linalg.matrix_norm(jac, ord=2).cpu())
    finally:
        model.train(was_training)
    return torch.cat(norms)


# relative slack for "holds": the forward passes run in the model's float32, the bound in float64; a linear model's
# Jacobian norm equals its bound exactly and may exceed it in the last bits. A bound 10x wrong is far outside it.
HOLDS_RTOL = 1e-5


def bound_check(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, product: float) -> dict[str, Any]:
    """A whole-net Lipschitz bound L held against adversarial pairs (x, x_adv), all with x_adv ≠ x.

    It "holds" when neither the largest ratio ‖f(x_adv) − f(x)‖ / ‖x_adv − x‖ nor the largest local Jacobian norm
    ‖J_f(x)‖ exceeds L (up to HOLDS_RTOL); both are lower estimates of the true constant. Also reported: how loose
    L is against each, and the radius L certifies around each x, margin / (√2·L) (no change of the predicted class
    within it), beside the ‖x_adv − x‖ of the pairs that did change it."""
    _check_pairs(x, x_adv)
    ratio = empirical_ratio(model, x, x_adv)
    local = local_lipschitz(model, x)
    r = (x_adv - x).flatten(1).double().norm(dim=1).cpu()
    logits = predict_logits(model, x).double()
    pred_adv = predict(model, x_adv)
    top2 = logits.topk(2, dim=1).values
    certified = (top2[:, 0] - top2[:, 1]) / (math.sqrt(2) * product)
    flipped = pred_adv != logits.argmax(dim=1)
    ratio_r = (r[flipped] / certified[flipped]) if bool(flipped.any()) else torch.empty(0, dtype=torch.float64)
    worst = max(float(ratio.max()), float(local.max()))
    return {"pairs": int(x.shape[0]), "bound": product, "holds": bool(worst <= product * (1 + HOLDS_RTOL)),
            "holds_rtol": HOLDS_RTOL,
            "ratio_max": float(ratio.max()), "ratio_median": float(ratio.median()),
            "local_jacobian_max": float(local.max()), "local_jacobian_median": float(local.median()),
            "looseness_vs_ratio": product / float(ratio.max()), "looseness_vs_local": product / float(local.max()),
            "flipped": int(flipped.sum()), "adv_l2_median": float(r[flipped].median()) if bool(flipped.any()) else None,
            "certified_radius_median": float(certified.median()),
            "adv_over_certified_min": float(ratio_r.min()) if ratio_r.numel() else None,
            "adv_over_certified_median": float(ratio_r.median()) if ratio_r.numel() else None}


__all__ = ["power_iteration_norm", "explicit_operator_norm", "empirical_ratio", "local_lipschitz", "bound_check",
           "HOLDS_RTOL"]
