"""Straight-through gradients (BPDA, Athalye et al. 2018) for layers whose gradient is zero or undefined, such as
input quantisation by rounding: the forward pass is the model's own, exactly; the backward pass treats the named
layers, and (with `functions`) every rounding call in the forward code, as the identity, or goes through a fitted
differentiable stand-in (attacks.standin) where a layer changes the shape. Plus a gradient probe that finds such
masking, and says why input gradients are unavailable when they are (no graph, None, NaN, a failing backward)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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
# calls on a tensor that requires grad which cut the graph to it (what the probe names when there is no graph)
_CUTS = {"gt": "a comparison", "ge": "a comparison", "lt": "a comparison", "le": "a comparison", "eq": "a comparison",
         "ne": "a comparison", "argmax": "an argmax", "argmin": "an argmin", "numpy": "a numpy round trip",
         "detach": "a .detach()", "detach_": "a .detach()", "bucketize": "a bucketize"}


class _Identity(torch.autograd.Function):
    """Returns `out` (computed without a graph) in the forward pass; passes the gradient to `x` unchanged."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, out: Tensor) -> Tensor:
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def straight_through(x: Tensor, out: Tensor) -> Tensor:
    """`out` in value, the identity of `x` in gradient (shapes must match). With `x` a stand-in's output for the
    same input, the backward pass goes through the stand-in."""
    if out.shape != x.shape:
        raise InputError(f"BPDA replaces a layer's gradient by the identity, so the layer must keep its input's shape; "
                         f"it maps {tuple(x.shape)} to {tuple(out.shape)}: fit a stand-in (attacks.standin) instead.")
    with torch.enable_grad():
        return _Identity.apply(x, out.detach())


class _RoundingMode(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in ROUNDING and args and isinstance(args[0], Tensor) and args[0].requires_grad \
                and isinstance(out, Tensor) and out.shape == args[0].shape:
            return _Identity.apply(args[0], out.detach())
        return out


INPUT, OUTPUT = "<input of {}>", "<model output>"  # names of the cuts in forward code (not layers)


class StraightThrough(nn.Module):
    """The model with straight-through gradients through `layers` (names in model.named_modules()) and, with
    `functions`, through torch.round/floor/ceil/trunc/sign called anywhere in its forward code. `standins` maps a
    layer to a differentiable module of the layer's input whose gradient replaces the layer's. `cuts` maps
    forward code that cuts the graph to how its gradient flows: "<input of NAME>" (the code before layer NAME,
    from the model's input: a stand-in of it, or None for the identity) and "<model output>" (None: the code after
    the last layer that kept a graph, `last`, is skipped under a gradient, its output taken as the logits)."""

    def __init__(self, model: nn.Module, layers: Sequence[str] = (), functions: bool = True,
                 standins: Mapping[str, nn.Module] | None = None, cuts: Mapping[str, nn.Module | None] | None = None,
                 last: str | None = None) -> None:
        super().__init__()
        self.model = as_model(model)
        names = dict(self.model.named_modules())
        cuts = dict(cuts or {})
        wanted = list(layers) + list(standins or {}) + [c[len("<input of "):-1] for c in cuts if c != OUTPUT]
        unknown = [n for n in wanted if n not in names] + ([last] if last is not None and last not in names else [])
        if unknown:
            raise InputError(f"--bpda {', '.join(unknown)}: no such layer; the model's layers: "
                             f"{', '.join(n for n in names if n) or '(none)'}.")
        self.layers = tuple(layers)
        self.functions = functions
        approx = {**{f"s{i}": v for i, v in enumerate((standins or {}).values())},
                  **{f"c{i}": v for i, v in enumerate(cuts.values()) if v is not None}}
        self.approx = nn.ModuleDict(approx)
        self._standins = {k: f"s{i}" for i, k in enumerate(standins or {})}
        self._cuts = {k: (f"c{i}" if v is not None else None) for i, (k, v) in enumerate(cuts.items())}
        self.last = last

    def _through(self, key: str | None, src: Tensor, out: Tensor) -> Tensor:
        """`out` in value; in gradient, the identity of `src` (key None) or the stand-in `key` of it (computed only
        where a gradient is taken: a forward pass without one returns `out` as it is)."""
        if not src.requires_grad:
            return out
        with torch.enable_grad():
            approx = src if key is None else self.approx[key](src)
        return straight_through(approx.reshape(out.shape) if approx.numel() == out.numel() else approx, out)

    def forward(self, x: Tensor) -> Tensor:
        modules = dict(self.model.named_modules())
        seen: dict[str, Tensor] = {}
        with ExitStack() as stack:
            def hook(m: nn.Module, h: Any) -> None:
                stack.callback(h.remove)
            for name in self.layers:
                hook(modules[name], modules[name].register_forward_hook(
                    lambda _m, inp, out: straight_through(inp[0], out)))
            for name, key in self._standins.items():
                hook(modules[name], modules[name].register_forward_hook(
                    lambda _m, inp, out, key=key: self._through(key, inp[0], out)))
            for cut, key in self._cuts.items():
                if cut == OUTPUT:
                    continue
                name = cut[len("<input of "):-1]
                hook(modules[name], modules[name].register_forward_pre_hook(
                    lambda _m, inp, key=key: (self._through(key, x, inp[0]), *inp[1:])))
            if self.last is not None and OUTPUT in self._cuts:
                hook(modules[self.last], modules[self.last].register_forward_hook(
                    lambda _m, _inp, out: seen.__setitem__("last", out)))
            if self.functions:
                stack.enter_context(_RoundingMode())
            out = self.model(x)
        if OUTPUT in self._cuts and "last" in seen and seen["last"].shape == out.shape and torch.is_grad_enabled() \
                and seen["last"].requires_grad:
            # the code after the last layer that kept a graph (e.g. an argmax-based rejection) gives the loss no
            # signal in value either: under a gradient, the attacked outputs are that layer's (a surrogate forward
            # pass; every example is re-verified on the model itself)
            out = seen["last"]
        return out


class _Watch(TorchFunctionMode):
    """Records the graph-cutting calls (comparisons, argmax, numpy, detach) made on tensors that require grad."""

    def __init__(self) -> None:
        super().__init__()
        self.cuts: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        what = _CUTS.get(getattr(func, "__name__", "").strip("_"))
        if what and args and isinstance(args[0], Tensor) and (args[0].requires_grad or what.endswith("numpy round trip")) \
                and what not in self.cuts:
            self.cuts.append(what)
        return func(*args, **(kwargs or {}))


@contextmanager
def _capture(model: nn.Module) -> Iterator[list[tuple[str, Any, Any, bool]]]:
    """(name, input, output, grad mode) of every leaf module's forward call while active, in call order."""
    seen: list[tuple[str, Any, Any, bool]] = []
    handles = []
    for name, m in model.named_modules():
        if name and not any(True for _ in m.children()):
            def hook(_m: nn.Module, inp: Any, out: Any, name: str = name) -> None:
                seen.append((name, inp[0] if inp else None, out, torch.is_grad_enabled()))
            handles.append(m.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def _no_graph(seen: list[tuple[str, Any, Any, bool]], watch: _Watch) -> str:
    """Why the output has no graph to the input, from what the forward pass did."""
    why = []
    if any(not grad for *_, grad in seen):
        why.append("torch.no_grad() (grad mode off) inside forward")
    why += [w + " inside forward" for w in watch.cuts]
    return "the output has no autograd graph to the input" + (f" ({'; '.join(why)})" if why else "")


def _layers(seen: list[tuple[str, Any, Any, bool]], seed: int) -> tuple[list[str], dict[str, list[list[int]]],
                                                                         str | None, str | None]:
    """Leaf layers whose output has a zero or no gradient to their input though it varies (with their input and
    output shapes), the first layer whose input lost the graph, and the last layer whose output kept it."""
    zero, shapes, cut, last = [], {}, None, None
    for name, inp, out, _grad in seen:
        if not isinstance(inp, Tensor) or not isinstance(out, Tensor):
            continue
        if out.requires_grad:
            last = name
        if not inp.requires_grad:
            cut = cut or name
            continue
        g = None
        if out.requires_grad and out.is_floating_point():
            gen = torch.Generator().manual_seed(seed)
            try:
                (g,) = torch.autograd.grad(out, inp, torch.randn(out.shape, generator=gen).to(out), retain_graph=True,
                                           allow_unused=True)
            except RuntimeError:
                g = None
        moves = out.numel() > 1 and float(out.detach().double().std()) > 0
        if (g is None or not bool(g.any()) or not bool(torch.isfinite(g).all())) and moves:
            zero.append(name)
            shapes[name] = [list(inp.shape[1:]), list(out.shape[1:])]
    return zero, shapes, cut, last


def gradient_probe(model: nn.Module, x: Tensor, criterion: Criterion, *, noise: float = 0.05, seed: int = 0,
                   bounds: tuple[float, float] = (0.0, 1.0)) -> dict[str, Any]:
    """Input gradients of the margin and cross-entropy losses on real images, and whether the outputs move under
    uniform noise of ±noise: masked when the margin gradient is zero on at least half of the images while the
    outputs change; `zero_layers` names the leaf layers whose own gradient is zero (or absent) though their output
    varies; `ce_saturated`: the cross-entropy's gradient vanishes on at least half (use a margin or DLR loss).
    `unavailable` says why there is no usable input gradient at all (None when there is one): no graph to the
    input (and what cut it), a None gradient, NaN or infinite gradients, a failing backward pass; `cut` names the
    first layer whose input lost the graph, `last` the last layer whose output kept it. Never raises for the model."""
    model = as_model(model)
    n = x.shape[0]
    out: dict[str, Any] = {"images": n, "zero_gradient": n, "ce_zero_gradient": n, "outputs_move": 0, "noise": noise,
                           "masked": True, "ce_saturated": True, "zero_layers": [], "layer_shapes": {},
                           "unavailable": None, "cut": None, "last": None}
    with attack_mode(model):
        xg = x.detach().clone().requires_grad_(True)
        margin_grad = ce_grad = None
        with torch.enable_grad(), _capture(model) as seen, _Watch() as watch:
            try:
                logits = model(xg)
            except Exception as exc:  # noqa: BLE001 - any failure of the user's forward is reported, not raised
                logits, out["unavailable"] = None, f"the forward pass fails on an input that requires grad ({_first_line(exc)})"
            if logits is not None:
                zero, shapes, cut, last = _layers(seen, seed)
                out.update(zero_layers=sorted(set(zero)), layer_shapes=shapes, cut=cut, last=last)
                if not logits.requires_grad:
                    out["unavailable"] = _no_graph(seen, watch)
                else:
                    try:
                        margin_grad = torch.autograd.grad(criterion.loss(logits, "margin").sum(), xg, retain_graph=True,
                                                          allow_unused=True)[0]
                        ce = torch.nn.functional.cross_entropy(logits, criterion.labels, reduction="sum") \
                            if criterion.labels is not None else criterion.loss(logits, "ce").sum()
                        ce_grad = torch.autograd.grad(ce, xg, retain_graph=True, allow_unused=True)[0]
                    except RuntimeError as exc:
                        out["unavailable"] = f"the backward pass fails ({_first_line(exc)})"
                    if out["unavailable"] is None and (margin_grad is None or ce_grad is None):
                        out["unavailable"] = "the input's gradient is None (the output does not depend on it in the graph)"
        if logits is not None:
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                noisy = (x + (torch.rand(x.shape, generator=gen).to(x) * 2 - 1) * noise).clamp(*bounds)
                out["outputs_move"] = int((model(noisy) != logits.detach()).flatten(1).any(1).sum())
    if margin_grad is not None and ce_grad is not None:
        bad = ~torch.isfinite(margin_grad).flatten(1).all(1) | ~torch.isfinite(ce_grad).flatten(1).all(1)
        if bool(bad.any()):
            out["unavailable"] = f"NaN or infinite input gradients on {int(bad.sum())} of {n} images"
        zero = ~margin_grad.nan_to_num().flatten(1).any(1)
        ce_zero = ~ce_grad.nan_to_num().flatten(1).any(1)
        out.update(zero_gradient=int(zero.sum()), ce_zero_gradient=int(ce_zero.sum()),
                   ce_saturated=bool(int(ce_zero.sum()) * 2 >= n))
        out["masked"] = bool(int(zero.sum()) * 2 >= n and out["outputs_move"] > 0)
    return out


__all__ = ["StraightThrough", "straight_through", "gradient_probe", "ROUNDING", "INPUT", "OUTPUT"]
