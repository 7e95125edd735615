"""Upper Lipschitz bounds per layer (Szegedy et al. 2014, §4.3 / Table 5) and the checks that verify them.

A feed-forward net f = f_L ∘ … ∘ f_1 satisfies ‖f(x + r) − f(x)‖ ≤ (∏_l L_l)·‖r‖ in ℓ2, where L_l bounds the
Lipschitz constant of layer l. `layer_bounds` computes one L_l per leaf layer of an `nn.Sequential`-style
model (nested Sequentials are walked in order); `lipschitz_bound` is their product.

Layers and their bounds (all in ℓ2):
- Linear: σ_max(W), exact. Maxout: σ_max of its linear map (the max over each unit's pieces is 1-Lipschitz
  because |max a − max b| ≤ max|a − b| ≤ ‖a − b‖ on each unit's disjoint group of pieces).
- Conv2d: from the 2-D DFT of the kernels, for the layer's real input size, stride, padding, dilation and
  groups. On a periodic N_h×N_w grid a strided circular convolution decouples into one small block per output
  frequency η: A(η) = (s_h s_w)^(-1/2)·[K̂(η + l·N/s)]_l, the c_out × (c_in·s_h·s_w) matrix that stacks the
  kernels' DFTs at the s_h·s_w frequencies aliased onto η by the stride (the paper's ξ + l·N·Δ⁻¹, Sedghi et
  al. 2019 for stride 1); the operator norm is max_η σ_max(A(η)), taken with one batched `svdvals`.
  Boundary handling decides whether this is exact:
  * padding_mode="circular", stride dividing the input and output size N/s: the layer *is* that operator,
    so the value is its exact operator norm (method "dft-exact").
  * zero padding (PyTorch's default): the layer equals the circular operator on a larger grid M ≥ N + p
    (M a multiple of s, M/s ≥ the output size) with the input embedded in the grid and the first outputs kept,
    i.e. a restriction of it, so the DFT value on M is an upper bound ("dft-upper"). It is not exact: the exact
    norm of a zero-padded (Toeplitz) convolution has no closed DFT form. The DFT on the unpadded N×N grid,
    as the paper's formula is often applied, is *not* a valid bound for zero padding (a 1-pixel input with a
    3-tap kernel [1, 1, −2] has norm 1 but circular norm 0), which is why the larger grid is used.
  * other padding modes (reflect, replicate, circular with sizes that do not divide): the padding map P
    repeats input pixels, ‖P‖ = √(largest number of copies of one pixel), times the bound of the unpadded
    convolution on the padded input ("dft-upper").
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

The bounds are verified rather than assumed: `power_iteration_norm` estimates a layer's operator norm on the
real layer by autograd (a certified lower estimate, ‖A v‖ for a unit v), `explicit_operator_norm` builds the
matrix for small inputs, and `empirical_ratio` / `local_lipschitz` measure ‖f(x + r) − f(x)‖ / ‖r‖ on a model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InputError, SpecError
from ..models.zoo import Maxout, RBFLayer

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
_CONV_GRID_LIMIT = 4096  # largest periodic grid side the DFT bound will build


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


# ---------------------------------------------------------------------------------------------- conv bound

def _dense_kernel(conv: nn.Conv2d) -> torch.Tensor:
    """The conv's weight as a dense [c_out, c_in, kh, kw] float64 kernel with groups and dilation expanded."""
    w = conv.weight.detach().to("cpu", torch.float64)
    c_out, c_in_g, kh, kw = w.shape
    g = conv.groups
    if g > 1:
        dense = w.new_zeros(c_out, c_in_g * g, kh, kw)
        per = c_out // g
        for i in range(g):
            dense[i * per:(i + 1) * per, i * c_in_g:(i + 1) * c_in_g] = w[i * per:(i + 1) * per]
        w = dense
    dh, dw = conv.dilation
    if dh > 1 or dw > 1:
        dil = w.new_zeros(w.shape[0], w.shape[1], dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        dil[:, :, ::dh, ::dw] = w
        w = dil
    return w


def _paddings(conv: nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int]]:
    """(left, right) padding per spatial axis, as the layer applies it (asymmetric for padding='same')."""
    kh, kw = conv.kernel_size
    dh, dw = conv.dilation
    if conv.padding == "valid":
        return (0, 0), (0, 0)
    if conv.padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        return (th // 2, th - th // 2), (tw // 2, tw - tw // 2)
    ph, pw = conv.padding
    return (ph, ph), (pw, pw)


def _alias_norm(kernel: torch.Tensor, grid: tuple[int, int], stride: tuple[int, int],
                offset: tuple[int, int]) -> float:
    """Exact operator norm of the strided circular convolution y[i] = Σ_a w[a] x[(s·i + a − offset) mod M]
    on an M_h×M_w periodic grid (s divides M), via batched SVDs of the aliased DFT blocks."""
    (mh, mw), (sh, sw), (oh, ow) = grid, stride, offset
    c_out, c_in, kh, kw = kernel.shape
    qh, qw = mh // sh, mw // sw

    def phases(m: int, k: int, o: int) -> torch.Tensor:  # [m, k]: exp(2πi ξ (a − o) / m)
        xi = torch.arange(m, dtype=torch.float64)[:, None]
        a = torch.arange(k, dtype=torch.float64)[None, :] - o
        return torch.polar(torch.ones(m, k, dtype=torch.float64), 2 * math.pi * xi * a / m)

    eh, ew = phases(mh, kh, oh), phases(mw, kw, ow)
    kc = kernel.to(torch.complex128)
    # frequency ξ_h = l·q_h + η_h; chunk over η_h to keep the blocks small for wide layers.
    per_row = c_out * c_in * sh * sw * qw * 16
    chunk = max(1, min(qh, (256 << 20) // max(per_row, 1)))
    best = 0.0
    for start in range(0, qh, chunk):
        eta = torch.arange(start, min(qh, start + chunk))
        rows = (torch.arange(sh)[:, None] * qh + eta[None, :]).reshape(-1)  # [sh·len(eta)], l-major
        k_hat = torch.einsum("xa,ocab,yb->xyoc", eh[rows], kc, ew)  # [sh·n, mw, c_out, c_in]
        n = eta.numel()
        blocks = (k_hat.reshape(sh, n, sw, qw, c_out, c_in)
                  .permute(1, 3, 4, 0, 2, 5).reshape(n * qw, c_out, sh * sw * c_in))
        best = max(best, float(torch.linalg.svdvals(blocks).amax()))
    return best / math.sqrt(sh * sw)


def _pad_index(n: int, left: int, right: int, mode: str) -> list[int]:
    """Which input position each padded position copies, for PyTorch's reflect/replicate/circular padding."""
    out = []
    for j in range(-left, n + right):
        if mode == "circular":
            out.append(j % n)
        elif mode == "replicate":
            out.append(min(max(j, 0), n - 1))
        else:  # reflect
            out.append(-j if j < 0 else (2 * (n - 1) - j if j >= n else j))
    return out


def _grid(n: int, left: int, right: int, out: int, s: int) -> int:
    """Smallest periodic grid (multiple of s) on which a zero-padded conv is a restriction of a circular one."""
    m = max(n + max(left, right), s * out)
    m = s * math.ceil(m / s)
    if m > _CONV_GRID_LIMIT:
        raise InputError(f"input side {n} is too large for the DFT conv bound (grid {m} > {_CONV_GRID_LIMIT})")
    return m


def _conv_norm(conv: nn.Conv2d, input_hw: tuple[int, int]) -> tuple[float, str, bool]:
    kernel = _dense_kernel(conv)
    (h, w), (sh, sw) = input_hw, conv.stride
    (plh, prh), (plw, prw) = _paddings(conv)
    kh, kw = kernel.shape[-2:]
    oh, ow = (h + plh + prh - kh) // sh + 1, (w + plw + prw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise InputError(f"a {kh}x{kw} conv with padding ({plh},{plw}) cannot run on a {h}x{w} input")
    mode = conv.padding_mode
    no_pad = plh == prh == plw == prw == 0
    if mode == "zeros" or no_pad:
        mh, mw = _grid(h, plh, prh, oh, sh), _grid(w, plw, prw, ow, sw)
        # without padding, windows no wider than the stride that tile the input never wrap: exact
        exact = no_pad and (mh, mw) == (h, w) and (oh * sh, ow * sw) == (h, w)
        value = _alias_norm(kernel, (mh, mw), (sh, sw), (plh, plw))
        if exact:
            return value, f"dft-exact on {mh}x{mw} (no padding, windows tile the input)", True
        what = "zero padding" if not no_pad else "no padding"
        return value, f"dft-upper on {mh}x{mw} periodic grid ({what}, input embedded)", False
    if mode == "circular" and h % sh == 0 and w % sw == 0 and oh <= h // sh and ow <= w // sw:
        # output i reads x[(s·i + a − p) mod N]: row i of the strided circular conv on the layer's own grid
        value = _alias_norm(kernel, (h, w), (sh, sw), (plh, plw))
        if (oh, ow) == (h // sh, w // sw):
            return value, f"dft-exact on {h}x{w} (circular padding)", True
        return value, f"dft-upper on {h}x{w} (circular; keeps {oh}x{ow} of {h // sh}x{w // sw} outputs)", False
    # reflect / replicate / other circular: ‖P‖ · bound of the unpadded conv on the padded input
    counts = []
    for n, left, right in ((h, plh, prh), (w, plw, prw)):
        idx = _pad_index(n, left, right, mode)
        counts.append(max(idx.count(i) for i in range(n)))
    ph, pw = h + plh + prh, w + plw + prw
    mh, mw = _grid(ph, 0, 0, oh, sh), _grid(pw, 0, 0, ow, sw)
    value = _alias_norm(kernel, (mh, mw), (sh, sw), (0, 0)) * math.sqrt(counts[0] * counts[1])
    return value, f"dft-upper on {mh}x{mw} x sqrt({counts[0]}*{counts[1]}) ({mode} padding copies pixels)", False


def conv2d_operator_norm(conv: nn.Conv2d, input_hw: tuple[int, int]) -> float:
    """ℓ2 operator-norm bound of the linear part of `conv` on inputs of spatial size `input_hw` (DFT method).

    Exact for circular padding with a stride that divides the input; an upper bound for zero and other padding
    (see the module docstring for how boundary and stride are handled)."""
    if not isinstance(conv, nn.Conv2d):
        raise InputError(f"conv2d_operator_norm takes an nn.Conv2d, got {type(conv).__name__}")
    return _conv_norm(conv, (int(input_hw[0]), int(input_hw[1])))[0]


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


# ---------------------------------------------------------------------------------------------- verification

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


@torch.no_grad()
def empirical_ratio(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Per pair ‖f(x_adv) − f(x)‖ / ‖x_adv − x‖ (ℓ2, on the model's outputs, eval mode): a lower estimate of the
    model's Lipschitz constant that `lipschitz_bound` must never fall below."""
    _check_pairs(x, x_adv)
    r = (x_adv - x).flatten(1).double().norm(dim=1)
    same = int((r == 0).sum())
    if same:
        raise InputError(f"{same} of {len(r)} pairs have x_adv == x (a failed attack?); the ratio is undefined "
                         "for them. Keep only the successful pairs, e.g. x[result.success].")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        diffs = [(model(x_adv[i:i + batch_size].to(device)) - model(x[i:i + batch_size].to(device)))
                 .flatten(1).double().norm(dim=1).cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(diffs) / r


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
