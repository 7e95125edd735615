"""Straight-through gradients (BPDA, Athalye et al. 2018) for layers whose gradient is zero or undefined, such as
input quantisation by rounding: the forward pass is the model's own, exactly; the backward pass treats the named
layers, and (with `functions`) every rounding call in the forward code, as the identity. Plus a gradient probe
that finds such masking: input gradients (nearly) all zero on real images while the outputs change under noise."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..errors import InputError
from .base import as_model, attack_mode
from .criteria import Criterion

# functions whose gradient is zero almost everywhere: straight-through under StraightThrough(functions=True)
ROUNDING = (torch.round, torch.floor, torch.ceil, torch.trunc, torch.sign, torch.fix, Tensor.round, Tensor.floor,
            Tensor.ceil, Tensor.trunc, Tensor.sign, Tensor.fix)


class _Identity(torch.autograd.Function):
    """Returns `out` (computed without a graph) in the forward pass; passes the gradient to `x` unchanged."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, out: Tensor) -> Tensor:
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def straight_through(x: Tensor, out: Tensor) -> Tensor:
    """`out` in value, the identity of `x` in gradient (shapes must match)."""
    if out.shape != x.shape:
        raise InputError(f"BPDA replaces a layer's gradient by the identity, so the layer must keep its input's shape; "
                         f"it maps {tuple(x.shape)} to {tuple(out.shape)}.")
    return _Identity.apply(x, out.detach())


class _RoundingMode(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in ROUNDING and args and isinstance(args[0], Tensor) and args[0].requires_grad \
                and isinstance(out, Tensor) and out.shape == args[0].shape:
            return _Identity.apply(args[0], out.detach())
        return out


class StraightThrough(nn.Module):
    """The model with straight-through gradients through `layers` (names in model.named_modules()) and, with
    `functions`, through torch.round/floor/ceil/trunc/sign called anywhere in its forward code."""

    def __init__(self, model: nn.Module, layers: Sequence[str] = (), functions: bool = True) -> None:
        super().__init__()
        self.model = as_model(model)
        names = dict(self.model.named_modules())
        unknown = [n for n in layers if n not in names]
        if unknown:
            raise InputError(f"--bpda {', '.join(unknown)}: no such layer; the model's layers: "
                             f"{', '.join(n for n in names if n) or '(none)'}.")
        self.layers = tuple(layers)
        self.functions = functions

    def forward(self, x: Tensor) -> Tensor:
        modules = dict(self.model.named_modules())
        with ExitStack() as stack:
            for name in self.layers:
                h = modules[name].register_forward_hook(lambda _m, inp, out: straight_through(inp[0], out))
                stack.callback(h.remove)
            if self.functions:
                stack.enter_context(_RoundingMode())
            return self.model(x)


@contextmanager
def _capture(model: nn.Module) -> Iterator[list[tuple[str, Tensor, Tensor]]]:
    """(name, input, output) of every leaf module's forward call while active."""
    seen: list[tuple[str, Tensor, Tensor]] = []
    handles = []
    for name, m in model.named_modules():
        if name and not any(True for _ in m.children()):
            def hook(_m: nn.Module, inp: Any, out: Any, name: str = name) -> None:
                if inp and isinstance(inp[0], Tensor) and isinstance(out, Tensor) and inp[0].requires_grad:
                    seen.append((name, inp[0], out))
            handles.append(m.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def gradient_probe(model: nn.Module, x: Tensor, criterion: Criterion, *, noise: float = 0.05, seed: int = 0,
                   bounds: tuple[float, float] = (0.0, 1.0)) -> dict[str, Any]:
    """Input gradients of the margin and cross-entropy losses on real images, and whether the outputs move under
    uniform noise of ±noise: masked when the margin gradient is zero on at least half of the images while the
    outputs change; `zero_layers` names the leaf layers whose own gradient is zero though their output varies;
    `ce_saturated`: the cross-entropy's gradient vanishes on at least half (use a margin or DLR loss)."""
    model = as_model(model)
    with attack_mode(model):
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad(), _capture(model) as seen:
            logits = model(xg)
            margin_grad = torch.autograd.grad(criterion.loss(logits, "margin").sum(), xg, retain_graph=True)[0]
            ce = torch.nn.functional.cross_entropy(logits, criterion.labels, reduction="sum") \
                if criterion.labels is not None else criterion.loss(logits, "ce").sum()
            ce_grad = torch.autograd.grad(ce, xg, retain_graph=True)[0]
            zero_layers = []
            for name, inp, out in seen:
                gen = torch.Generator().manual_seed(seed)
                (g,) = torch.autograd.grad(out, inp, torch.randn(out.shape, generator=gen).to(out), retain_graph=True,
                                           allow_unused=True)
                if (g is None or not bool(g.any())) and float(out.detach().std()) > 0:
                    zero_layers.append(name)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            noisy = (x + (torch.rand(x.shape, generator=gen).to(x) * 2 - 1) * noise).clamp(*bounds)
            moved = (model(noisy) != logits.detach()).flatten(1).any(1)
    zero = ~margin_grad.flatten(1).any(1)
    ce_zero = ~ce_grad.flatten(1).any(1)
    n = x.shape[0]
    return {"images": n, "zero_gradient": int(zero.sum()), "ce_zero_gradient": int(ce_zero.sum()),
            "outputs_move": int(moved.sum()), "noise": noise,
            "masked": bool(int(zero.sum()) * 2 >= n and bool(moved.any())),
            "ce_saturated": bool(int(ce_zero.sum()) * 2 >= n), "zero_layers": sorted(set(zero_layers))}


__all__ = ["StraightThrough", "straight_through", "gradient_probe", "ROUNDING"]
