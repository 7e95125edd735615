"""Certified lower bounds per image: margin bounds at ε, "certified at ε", and the certified radius by bisection.

A margin bound is a claim about every input in the set, so it is a lower bound of the margin any attack can
reach; the certified radius is a lower bound of the minimal adversarial distortion (exact.py gives the exact one).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..errors import InputError
from . import crown, ibp
from .inputs import InputSet
from .network import Activation, MaxPieces, Network, network

METHODS = ("ibp", "crown", "alpha-crown")


def _check(method: str, x: Tensor, y: Tensor) -> None:
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    if x.dim() < 2 or y.shape != (x.shape[0],):
        raise InputError(f"images [N, ...] and labels [N] expected, got {tuple(x.shape)} and {tuple(y.shape)}.")


def _margins(net: Network, y: Tensor, inputs: InputSet, method: str, alpha_steps: int) -> Tensor:
    if method == "ibp":
        lo, hi = ibp.interval_bounds(net, *inputs.box())[-1]
        return lo.gather(1, y[:, None]) - hi  # logit_y's lower bound minus logit_j's upper bound
    return crown.margins(net, y, inputs, alpha_steps=alpha_steps if method == "alpha-crown" else 0)


def _input_sets(x: Tensor, eps: float | Tensor, norm: str, bounds: tuple[float, float],
                batch_size: int) -> Iterator[tuple[slice, InputSet]]:
    """The images in batches of `batch_size`, each as (its rows, its input set: ε ball ∩ box, one ε per image)."""
    e = torch.as_tensor(eps, dtype=torch.float64).cpu().expand(x.shape[0])
    for start in range(0, x.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        yield rows, InputSet(x[rows].cpu(), e[rows], norm, bounds)


def margin_bounds(model: nn.Module | Network, x: Tensor, y: Tensor, eps: float | Tensor, *, norm: str = "linf",
                  method: str = "crown", bounds: tuple[float, float] = (0.0, 1.0), alpha_steps: int = 20,
                  batch_size: int = 200) -> Tensor:
    """[N, C]: certified lower bounds of logit_y − logit_j over {x' : ‖x' − x‖_norm ≤ ε, x' in bounds}, +inf at
    j = y. eps: a number or one per image [N]. method: "ibp", "crown" or "alpha-crown"."""
    _check(method, x, y)
    net = model if isinstance(model, Network) else network(model, tuple(x.shape[1:]))
    out = []
    with torch.no_grad():
        for rows, inputs in _input_sets(x, eps, norm, bounds, batch_size):
            m = _margins(net, y[rows].cpu(), inputs, method, alpha_steps)
            out.append(m.masked_fill(torch.nn.functional.one_hot(y[rows].cpu(), net.classes).bool(), torch.inf))
    return torch.cat(out)


def certified(model: nn.Module | Network, x: Tensor, y: Tensor, eps: float | Tensor, **kw: object) -> Tensor:
    """[N] bool: every input within ε of x (in bounds) provably gets label y (all margin bounds > 0)."""
    return margin_bounds(model, x, y, eps, **kw).amin(dim=1) > 0  # type: ignore[arg-type]


def certified_radius(model: nn.Module | Network, x: Tensor, y: Tensor, *, norm: str = "linf", method: str = "crown",
                     eps_max: float | Tensor | None = None, steps: int = 16, **kw: object) -> Tensor:
    """[N]: the largest ε found certified by bisection on [0, eps_max] (default: the box's diameter in the
    norm), accurate to eps_max / 2**steps; 0 where even ε = 0 is not certified (a misclassified image).
    A lower bound of the minimal adversarial distortion. eps_max may be per image (e.g. an attack's distortion,
    which no certificate can exceed)."""
    _check(method, x, y)
    net = model if isinstance(model, Network) else network(model, tuple(x.shape[1:]))
    lo_b, hi_b = kw.get("bounds", (0.0, 1.0))  # type: ignore[misc]
    d = x[0].numel()
    default = {"linf": 1.0, "l2": d ** 0.5, "l1": float(d)}.get(norm, 1.0) * (hi_b - lo_b)
    hi = torch.as_tensor(default if eps_max is None else eps_max, dtype=torch.float64).cpu()
    hi = hi.expand(x.shape[0]).clone()
    lo = torch.zeros_like(hi)
    ok0 = certified(net, x, y, 0.0, norm=norm, method=method, **kw)
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok = certified(net, x, y, mid, norm=norm, method=method, **kw)
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    return torch.where(ok0, lo, torch.zeros_like(lo))


def hidden_units(model: nn.Module | Network, in_shape: tuple[int, ...]) -> int:
    """Inputs of the nonlinear operations (activations, maxima): the units whose bounds CROWN computes by one backward
    pass each (two specs per unit), so its cost grows with this number."""
    net = model if isinstance(model, Network) else network(model, in_shape)
    return sum(int(torch.tensor(op.in_shape).prod()) for op in net.ops if isinstance(op, (Activation, MaxPieces)))


def unstable_units(model: nn.Module | Network, x: Tensor, eps: float | Tensor, *, norm: str = "linf",
                   bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 50, method: str = "crown") -> Tensor:
    """[N]: per image, the ReLUs whose pre-activation bounds over the ε ball ∩ box straddle 0, plus the max
    units (maxout, max-pooling) with more than one piece that can be the maximum: the binary variables the exact
    program needs (exact.py), the measure of its size. Smooth activations (sigmoid, tanh) count none.
    method "crown" (the bounds the exact program uses) or "ibp": looser, so its count is an upper bound of
    CROWN's, at the cost of one forward pass instead of one backward pass per unit (for nets too large for CROWN)."""
    if method not in ("crown", "ibp"):
        raise InputError(f"method must be crown or ibp, got {method!r}.")
    net = model if isinstance(model, Network) else network(model, tuple(x.shape[1:]))
    out = []
    with torch.no_grad():
        for rows, inputs in _input_sets(x, eps, norm, bounds, batch_size):
            if method == "crown":
                unit_bounds, _ = crown.layer_bounds(net, inputs)
            else:
                unit_bounds = ibp.interval_bounds(net, *inputs.box())[:-1]
            count = torch.zeros(x[rows].shape[0], dtype=torch.long)
            for op, b in zip(net.ops, unit_bounds):
                if b is None:
                    continue
                lo, hi = b
                if isinstance(op, Activation) and op.kind == "relu":
                    count += ((lo < 0) & (hi > 0)).flatten(1).sum(1)
                elif isinstance(op, MaxPieces):
                    count += ((hi > lo.amax(-1, keepdim=True)).sum(-1) > 1).flatten(1).sum(1)
            out.append(count)
    return torch.cat(out)
