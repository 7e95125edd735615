"""A classifier as a flat list of bound-friendly operations: affine maps, elementwise activations and maxima.

Every supported layer becomes one or two of three operation kinds, so the bound code (ibp, crown) and the
solver glue (milp) each need one case per kind, not per layer:

- `Affine`: a batched affine map with its |weights| map and its transpose (Linear, Conv2d, AvgPool2d, Flatten,
  the `Normalized` wrapper's (x − μ)/σ, and the linear halves of Maxout and MaxPool2d);
- `Activation`: an elementwise ReLU, Sigmoid or Tanh;
- `MaxPieces`: the maximum over the last axis (Maxout's pieces, MaxPool2d's windows after an unfold).

Dropout and Identity vanish (identity in eval mode). Any other layer raises UnsupportedLayerError naming it.
The network is a float64 copy in eval mode, so bounds are not loosened by float32 rounding.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..attacks import Normalized
from ..errors import InputError
from ..models.zoo import Maxout

SUPPORTED = ("Linear, Conv2d (zero padding), AvgPool2d, MaxPool2d (no padding), Flatten, ReLU, Sigmoid, Tanh, "
             "Maxout, Dropout, Identity, Normalized, nn.Sequential")


class UnsupportedLayerError(InputError):
    """A layer the verifier cannot bound; the message names it and lists the supported kinds."""


@dataclass
class Affine:
    """y = fn(x), affine. abs_fn: the linear part with every weight replaced by its absolute value (for interval
    arithmetic). weight: the dense (out, in) matrix when cheap to hold (a Linear), else None (transposes then go
    through autograd, exact for any linear map)."""

    name: str
    fn: Callable[[Tensor], Tensor]
    abs_fn: Callable[[Tensor], Tensor]
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()
    weight: Tensor | None = None
    reshape_only: bool = False  # a Flatten: the transpose is a reshape
    _bias: Tensor | None = field(default=None, repr=False)

    @property
    def bias(self) -> Tensor:
        """fn(0): the offset, shaped like one output."""
        if self._bias is None:
            with torch.no_grad():
                self._bias = self.fn(torch.zeros((1, *self.in_shape), dtype=torch.float64))[0]
        return self._bias

    def transpose(self, a: Tensor) -> Tensor:
        """a [N, S, *out] -> a·W [N, S, *in]: coefficients on the output pulled back to the input."""
        n, s = a.shape[:2]
        if self.weight is not None and len(self.in_shape) == 1:
            return a.reshape(n, s, -1) @ self.weight
        if self.reshape_only:
            return a.reshape(n, s, *self.in_shape)
        with torch.enable_grad():
            z = torch.zeros((n * s, *self.in_shape), dtype=a.dtype, requires_grad=True)
            out = self.fn(z)
            (g,) = torch.autograd.grad(out, z, a.reshape(n * s, *self.out_shape), create_graph=a.requires_grad)
        return g.reshape(n, s, *self.in_shape)

    def dense(self) -> tuple[Tensor, Tensor]:
        """(W [out, in], b [out]) over flattened shapes, for the MILP encoding."""
        d_in = int(torch.tensor(self.in_shape).prod())
        with torch.no_grad():
            eye = torch.eye(d_in, dtype=torch.float64).reshape(d_in, *self.in_shape)
            w = (self.fn(eye) - self.bias).reshape(d_in, -1).T
        return w, self.bias.reshape(-1)


@dataclass
class Activation:
    """Elementwise ReLU, Sigmoid or Tanh."""

    name: str
    kind: str  # "relu" | "sigmoid" | "tanh"
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()

    def fn(self, x: Tensor) -> Tensor:
        return {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[self.kind](x)


@dataclass
class MaxPieces:
    """y = max over the last axis of the input (the pieces)."""

    name: str
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()

    def fn(self, x: Tensor) -> Tensor:
        return x.amax(dim=-1)


Op = Affine | Activation | MaxPieces


@dataclass
class Network:
    """The flat operation list of a classifier and the float64 module it was read from."""

    ops: list[Op]
    module: nn.Module
    in_shape: tuple[int, ...]

    @property
    def classes(self) -> int:
        return self.ops[-1].out_shape[0]

    def forward(self, x: Tensor, upto: int | None = None) -> Tensor:
        """Run the operations 0..upto-1 (all by default) on a batch: checks the flattening against the module."""
        for op in self.ops[:upto]:
            x = op.fn(x)
        return x

    @property
    def piecewise_linear(self) -> bool:
        return all(not isinstance(op, Activation) or op.kind == "relu" for op in self.ops)


def _linear(name: str, m: nn.Linear) -> list[Op]:
    w = m.weight.detach()
    return [Affine(name, m, lambda x: x @ w.abs().T, weight=w)]


def _conv2d(name: str, m: nn.Conv2d) -> list[Op]:
    if m.padding_mode != "zeros":
        raise UnsupportedLayerError(f"verify cannot bound layer '{name}' (Conv2d with padding_mode="
                                    f"{m.padding_mode!r}): only zero padding is supported.")
    w = m.weight.detach().abs()
    return [Affine(name, m, lambda x: F.conv2d(x, w, None, m.stride, m.padding, m.dilation, m.groups))]


def _avgpool2d(name: str, m: nn.AvgPool2d) -> list[Op]:
    return [Affine(name, m, m)]  # non-negative weights: |W| = W


def _flatten(name: str, m: nn.Flatten) -> list[Op]:
    return [Affine(name, m, m, reshape_only=m.start_dim == 1 and m.end_dim == -1)]


def _normalized(name: str, m: Normalized) -> list[Op]:
    mean, std = m.mean.double(), m.std.double()
    return [Affine(f"{name}.normalize", lambda x: (x - mean) / std, lambda x: x / std),
            *_flatten_module(m.model, f"{name}.model")]


def _maxout(name: str, m: Maxout) -> list[Op]:
    lin = m.linear

    def pieces(x: Tensor) -> Tensor:
        return lin(x).view(*x.shape[:-1], m.units, m.pieces)

    w = lin.weight.detach().abs()
    return [Affine(f"{name}.linear", pieces, lambda x: (x @ w.T).view(*x.shape[:-1], m.units, m.pieces)),
            MaxPieces(f"{name}.max")]


def _maxpool2d(name: str, m: nn.MaxPool2d) -> list[Op]:
    k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size, m.kernel_size)
    s = m.stride if isinstance(m.stride, tuple) else (m.stride, m.stride)
    if m.padding not in (0, (0, 0)) or m.dilation not in (1, (1, 1)) or m.ceil_mode or m.return_indices:
        raise UnsupportedLayerError(f"verify cannot bound layer '{name}' (MaxPool2d with padding, dilation, "
                                    f"ceil_mode or return_indices): only plain windows are supported.")

    def windows(x: Tensor) -> Tensor:  # [N, C, H, W] -> [N, C, H', W', k·k]: a linear selection
        n, c, h, w_ = x.shape
        ho, wo = (h - k[0]) // s[0] + 1, (w_ - k[1]) // s[1] + 1
        u = F.unfold(x, k, stride=s).view(n, c, k[0] * k[1], ho, wo)
        return u.permute(0, 1, 3, 4, 2)

    return [Affine(f"{name}.windows", windows, windows), MaxPieces(f"{name}.max")]


def _activation(kind: str) -> Callable[[str, nn.Module], list[Op]]:
    return lambda name, m: [Activation(name, kind)]


_LAYERS: dict[type, Callable[[str, nn.Module], list[Op]]] = {
    nn.Linear: _linear, nn.Conv2d: _conv2d, nn.AvgPool2d: _avgpool2d, nn.Flatten: _flatten,
    nn.MaxPool2d: _maxpool2d, Maxout: _maxout, Normalized: _normalized,
    nn.ReLU: _activation("relu"), nn.Sigmoid: _activation("sigmoid"), nn.Tanh: _activation("tanh"),
}


def _flatten_module(m: nn.Module, name: str) -> list[Op]:
    if isinstance(m, nn.Sequential):
        return [op for child_name, child in m.named_children()
                for op in _flatten_module(child, f"{name}.{child_name}" if name else child_name)]
    if isinstance(m, (nn.Dropout, nn.Identity)):
        return []
    for kind, build in _LAYERS.items():
        if isinstance(m, kind):  # a subclass with its own forward is caught by network()'s forward check
            return build(name or type(m).__name__, m)
    raise UnsupportedLayerError(f"verify cannot bound layer '{name or '<model>'}' ({type(m).__name__}); supported "
                                f"layers: {SUPPORTED}. Bound such a model with an attack's upper bound only.")


def network(model: nn.Module, in_shape: tuple[int, ...]) -> Network:
    """The model (eval mode, float64 copy on the CPU, whatever the model's device: verify and its solvers run
    there) as a flat operation list for inputs of shape in_shape (one image)."""
    if not isinstance(model, nn.Module):
        raise UnsupportedLayerError(f"verify needs an nn.Module built from supported layers ({SUPPORTED}), got "
                                    f"{type(model).__name__}.")
    module = copy.deepcopy(model).cpu().double().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    ops = _flatten_module(module, "")
    shape = tuple(in_shape)
    with torch.no_grad():
        x = torch.zeros((1, *shape), dtype=torch.float64)
        for op in ops:
            op.in_shape = tuple(x.shape[1:])
            x = op.fn(x)
            op.out_shape = tuple(x.shape[1:])
        if x.dim() != 2:
            raise UnsupportedLayerError(f"the model's output has shape {tuple(x.shape[1:])} per image; verify "
                                        f"needs logits [N, C].")
        probe = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        ours, theirs = Network(ops, module, shape).forward(probe), module(probe)
        if not torch.allclose(ours, theirs, rtol=1e-9, atol=1e-9):
            raise UnsupportedLayerError("the model's forward does not match its layers run in order (it has "
                                        "custom forward logic, e.g. skips); verify supports sequential models.")
    return Network(ops, module, shape)
