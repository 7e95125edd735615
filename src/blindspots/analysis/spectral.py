"""Upper Lipschitz bounds per layer (Szegedy et al. 2014, §4.3 / Table 5) and the checks that verify them.

A feed-forward net f = f_L ∘ … ∘ f_1 satisfies ‖f(x + r) − f(x)‖ ≤ (∏_l L_l)·‖r‖ in ℓ2, where L_l bounds the
Lipschitz constant of layer l. `layer_bounds` computes one L_l per leaf layer of an `nn.Sequential`-style
model (nested Sequentials are walked in order); `lipschitz_bound` is their product.

Layers and their bounds (all in ℓ2):
- Linear: σ_max(W), exact. Maxout: σ_max of its linear map (the max over each unit's pieces is 1-Lipschitz
  because |max a − max b| ≤ max|a − b| ≤ ‖a − b‖ on each unit's disjoint group of pieces).
- Conv2d: from the 2-D DFT of the kernels, for the layer's real input size, stride, padding, dilation and
  groups (`conv_bound`: exact for circular padding with a dividing stride, an upper bound otherwise).
- ReLU, max pooling with windows that do not overlap, flatten, dropout (at eval), identity, tanh, hard tanh,
  softplus, softmax: 1. Sigmoid: 1/4. Leaky ReLU: max(1, |slope|). ELU: max(1, α). Max pooling with
  overlapping windows: √m, m the largest number of windows that share one input pixel (each window's max is
  1-Lipschitz in that window's pixels, and a pixel enters m windows).
- Average pooling (any padding, ceil mode or divisor) and adaptive average pooling: the Schur test
  √(max row sum · max column sum) of its nonnegative matrix, computed from the real layer; exact for
  non-overlapping windows (e.g. 2×2 / stride 2 gives 1/2).
- BatchNorm in eval mode: max_c |γ_c| / √(running_var_c + ε), exact.
Anything else (RBF units, layer norm, batch norm without running statistics, …) raises `SpecError` naming the
layer: a bound we cannot justify is worse than none.

The bounds are verified rather than assumed (`bound_check`: power iteration on the real layers, explicit
matrices, empirical ratios on adversarial pairs, local Jacobian norms).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InputError, SpecError
from ..models.zoo import Maxout, RBFLayer
from .bound_check import (bound_check, empirical_ratio, explicit_operator_norm, local_lipschitz,
                          power_iteration_norm)
from .conv_bound import _conv_norm, conv2d_operator_norm

# Layers with a fixed ℓ2 Lipschitz constant: (bound, why).
_CONSTANT_BOUNDS: dict[type[nn.Module], tuple[float, str]] = {
    nn.ReLU: (1.0, "1 (ReLU is 1-Lipschitz)"),
    nn.ReLU6: (1.0, "1 (clipped ReLU)"),
    nn.Tanh: (1.0, "1 (max tanh' = 1)"),
    nn.Hardtanh: (1.0, "1 (clipping)"),
    nn.Softplus: (1.0, "1 (max softplus' = 1)"),
    nn.Softmax: (1.0, "1 (softmax is 1-Lipschitz, Gao & Pavel 2017)"),
    nn.Sigmoid: (0.25, "1/4 (max σ' = 1/4)"),
    nn.Flatten: (1.0, "1 (reshape)"),
    nn.Unflatten: (1.0, "1 (reshape)"),
    nn.Identity: (1.0, "1 (identity)"),
    nn.Dropout: (1.0, "1 (identity in eval mode)"),
    nn.Dropout1d: (1.0, "1 (identity in eval mode)"),
    nn.Dropout2d: (1.0, "1 (identity in eval mode)"),
    nn.AlphaDropout: (1.0, "1 (identity in eval mode)"),
}


@dataclass(frozen=True)
class LayerBound:
    """One layer's ℓ2 Lipschitz bound. `exact`: the bound equals the layer's Lipschitz constant (not only ≥).
    `lower`: a certified lower estimate of the layer's operator norm by power iteration on the real layer
    (linear layers only, when asked for), so the true value lies in [lower, bound]."""

    name: str
    kind: str
    bound: float
    method: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    exact: bool
    lower: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- model walk

def sequential_layers(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The leaf layers of an `nn.Sequential` (nested ones walked in order) with their dotted names."""
    if not isinstance(model, nn.Sequential):
        return [(prefix or type(model).__name__, model)]
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        full = f"{prefix}.{name}" if prefix else name
        out += sequential_layers(child, full) if isinstance(child, nn.Sequential) else [(full, child)]
    return out


def _trace(model: nn.Module, input_shape: Sequence[int]) -> list[tuple[str, nn.Module, torch.Size, torch.Size]]:
    """Leaf layers with per-sample input/output shapes, checked to reproduce the model's own forward pass."""
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise InputError(f"input_shape must be the shape of one input without the batch axis, e.g. (1, 28, 28); "
                         f"got {tuple(input_shape)}")
    layers = sequential_layers(model)
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((2, *shape), generator=gen).to(device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    trace = []
    try:
        with torch.no_grad():
            h = x
            for name, layer in layers:
                out = layer(h)
                trace.append((name, layer, h.shape[1:], out.shape[1:]))
                h = out
            ref = model(x)
    except RuntimeError as exc:
        raise InputError(f"the model does not accept inputs of shape {shape}: {exc}. "
                         "Pass the shape of one input without the batch axis, e.g. (1, 28, 28).") from exc
    finally:
        model.train(was_training)
    if ref.shape != h.shape or not torch.allclose(ref, h, rtol=1e-4, atol=1e-5):
        raise SpecError(f"{type(model).__name__}'s forward pass is not its layers applied in order (a residual "
                        "or custom forward?), so a product of per-layer bounds would not bound it. Pass an "
                        "nn.Sequential whose layers run one after another.")
    return trace


# ---------------------------------------------------------------------------------------------- other layers

def _window_multiplicity(n: int, out: int, k: int, s: int, pad: int, dil: int) -> int:
    """Largest number of pooling windows (start s·i − pad, taps spaced dil) that share one input position."""
    counts = [0] * n
    for i in range(out):
        for j in range(k):
            pos = s * i - pad + dil * j
            if 0 <= pos < n:
                counts[pos] += 1
    return max(counts) if counts else 0


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _maxpool_bound(pool: nn.MaxPool2d, ishape: torch.Size, oshape: torch.Size) -> tuple[float, str, bool]:
    (kh, kw), (sh, sw) = _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size)
    (ph, pw), (dh, dw) = _pair(pool.padding), _pair(pool.dilation)
    mh = _window_multiplicity(ishape[-2], oshape[-2], kh, sh, ph, dh)
    mw = _window_multiplicity(ishape[-1], oshape[-1], kw, sw, pw, dw)
    m = mh * mw
    if m <= 1:
        return 1.0, "1 (max over disjoint windows)", True
    return math.sqrt(m), f"sqrt({m}) (overlapping windows: a pixel enters up to {m})", False


def _schur_bound(layer: nn.Module, ishape: torch.Size) -> tuple[float, str, bool]:
    """√(max row sum · max column sum) of a nonnegative linear layer, both sums read off the real layer."""
    ones = torch.ones((1, *ishape), dtype=torch.float64, requires_grad=True)
    layer64 = copy.deepcopy(layer).double().cpu().eval()
    out = layer64(ones)
    (cols,) = torch.autograd.grad(out.sum(), ones)
    row, col = float(out.detach().amax()), float(cols.amax())
    value = math.sqrt(row * col)
    return value, f"Schur test sqrt(max row sum {row:.4g} * max col sum {col:.4g})", False


def _batchnorm_bound(bn: nn.modules.batchnorm._BatchNorm, name: str) -> tuple[float, str, bool]:
    if bn.running_var is None:
        raise SpecError(f"layer {name!r} ({type(bn).__name__}) has no running statistics, so in eval mode it "
                        "normalises with the batch's own statistics and has no per-input Lipschitz bound; build "
                        "it with track_running_stats=True.")
    scale = 1 / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double().abs()
    return float(scale.amax()), "max |γ|/sqrt(var + ε) (eval-mode affine map)", True


def _linear_norm(weight: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(weight.detach().double().cpu(), ord=2))


def _bound_one(name: str, layer: nn.Module, ishape: torch.Size, oshape: torch.Size) -> tuple[float, str, bool]:
    if isinstance(layer, nn.Linear):
        return _linear_norm(layer.weight), "sigma_max(W)", True
    if isinstance(layer, Maxout):
        return _linear_norm(layer.linear.weight), "sigma_max(W) (max over pieces is 1-Lipschitz)", False
    if isinstance(layer, nn.Conv2d):
        return _conv_norm(layer, (int(ishape[-2]), int(ishape[-1])))
    if isinstance(layer, nn.MaxPool2d):
        return _maxpool_bound(layer, ishape, oshape)
    if isinstance(layer, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return _schur_bound(layer, ishape)
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return _batchnorm_bound(layer, name)
    if isinstance(layer, nn.LeakyReLU):
        return max(1.0, abs(layer.negative_slope)), "max(1, |slope|)", True
    if isinstance(layer, nn.ELU):
        return max(1.0, float(layer.alpha)), "max(1, alpha)", True
    for cls, (value, why) in _CONSTANT_BOUNDS.items():
        if type(layer) is cls:
            return value, why, True
    if isinstance(layer, nn.modules.dropout._DropoutNd):  # a subclass (the zoo's scaled dropout): identity in eval
        return 1.0, "1 (identity in eval mode)", True
    if isinstance(layer, RBFLayer):
        raise SpecError(f"layer {name!r} (RBFLayer) has no global Lipschitz bound: its gradient "
                        "−2β(x − μ) grows without limit away from the centres. Bound a model without RBF units, "
                        "or restrict the analysis to the layers before it.")
    supported = sorted({c.__name__ for c in _CONSTANT_BOUNDS} | {
        "Linear", "Maxout", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d/2d",
        "LeakyReLU", "ELU"})
    raise SpecError(f"no Lipschitz bound for layer {name!r} of type {type(layer).__name__}. Supported layers: "
                    f"{', '.join(supported)}; nested nn.Sequential containers are walked. Replace the layer or "
                    "bound the model up to it.")


_AFFINE = (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.modules.batchnorm._BatchNorm)


def layer_bounds(model: nn.Module, input_shape: Sequence[int], *, verify: bool = False,
                 iters: int = 100) -> list[LayerBound]:
    """One Lipschitz bound per leaf layer of `model` for inputs of `input_shape` (one sample, no batch axis).

    With `verify`, each affine layer (Linear, Conv2d, average pooling, batch norm) also gets `lower`, a power-
    iteration estimate of its operator norm on the real layer by autograd; a `bound` below it is an error.
    """
    out = []
    for name, layer, ishape, oshape in _trace(model, input_shape):
        value, method, exact = _bound_one(name, layer, ishape, oshape)
        lower = None
        if verify and isinstance(layer, _AFFINE):
            lower = power_iteration_norm(layer, tuple(ishape), iters=iters)
            if lower > value * (1 + 1e-6) + 1e-9:
                raise AssertionError(f"bound {value} of layer {name!r} is below its power-iteration norm {lower}")
        out.append(LayerBound(name, type(layer).__name__, float(value), method, tuple(ishape), tuple(oshape),
                              exact, lower))
    return out


def lipschitz_bound(model: nn.Module, input_shape: Sequence[int]) -> float:
    """Product of the per-layer bounds: ‖f(x + r) − f(x)‖ ≤ this · ‖r‖ for every x, r of that shape."""
    return math.prod(b.bound for b in layer_bounds(model, input_shape))


def format_bound_table(bounds: Sequence[LayerBound]) -> str:
    """A Table 5-style text table: one row per layer, then the product."""
    rows = [("layer", "kind", "in -> out", "bound", "power it.", "method")]
    for b in bounds:
        shapes = f"{'x'.join(map(str, b.input_shape))} -> {'x'.join(map(str, b.output_shape))}"
        lower = "" if b.lower is None else f"{b.lower:.4f}"
        rows.append((b.name, b.kind, shapes, f"{b.bound:.4f}" + ("" if b.exact else "*"), lower, b.method))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"product (Lipschitz bound of the whole net): {math.prod(b.bound for b in bounds):.6g}")
    if not all(b.exact for b in bounds):
        lines.append("* upper bound, not the layer's exact Lipschitz constant")
    return "\n".join(lines)


__all__ = ["LayerBound", "layer_bounds", "lipschitz_bound", "sequential_layers", "format_bound_table",
           "conv2d_operator_norm", "power_iteration_norm", "explicit_operator_norm", "empirical_ratio",
           "local_lipschitz", "bound_check"]
