"""Per-layer Lipschitz bounds (§4.3): the DFT conv norm against explicit matrices and power iteration, the other
layers' bounds, refusals, and the whole-net product against empirical ratios on real MNIST models."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import numpy as np
from scipy.sparse.linalg import LinearOperator, svds

from blindspots.analysis import (bound_check, conv2d_operator_norm, empirical_ratio, explicit_operator_norm,
                                 format_bound_table, layer_bounds, lipschitz_bound, local_lipschitz,
                                 power_iteration_norm)
from blindspots.data import load_mnist
from blindspots.errors import InputError, SpecError
from blindspots.models import build_model, train
from blindspots.models.zoo import Maxout


pytestmark = pytest.mark.usefixtures("one_thread")


def _conv(c_in: int, c_out: int, k: int | tuple[int, int], seed: int, **kw) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(c_in, c_out, k, **kw).double()


# (c_in, c_out, kernel, stride, input side, dilation, groups); circular padding of (k_eff - 1) / 2
CIRCULAR = [(2, 3, 3, 1, 8, 1, 1), (2, 3, 3, 2, 8, 1, 1), (3, 4, 5, 2, 12, 1, 1), (2, 2, 3, 3, 9, 1, 1),
            (4, 2, 3, 2, 6, 2, 2), (1, 5, 5, 4, 8, 1, 1), (3, 3, 1, 2, 10, 1, 1)]


@pytest.mark.parametrize("c_in,c_out,k,stride,n,dil,groups", CIRCULAR)
def test_dft_norm_equals_explicit_matrix_for_circular_convs(c_in, c_out, k, stride, n, dil, groups) -> None:
    pad = dil * (k - 1) // 2
    conv = _conv(c_in, c_out, k, seed=n + k + stride, stride=stride, padding=pad, dilation=dil, groups=groups,
                 padding_mode="circular")
    dft = conv2d_operator_norm(conv, (n, n))
    explicit = explicit_operator_norm(conv, (c_in, n, n))
    assert dft == pytest.approx(explicit, rel=1e-4)
    (b,) = layer_bounds(nn.Sequential(conv), (c_in, n, n))
    assert b.exact and b.method.startswith("dft-exact")


# (c_in, c_out, kernel, stride, padding, input h, w, dilation)
ZERO_PADDED = [(2, 3, 3, 1, 1, 8, 8, 1), (2, 3, 3, 2, 1, 8, 8, 1), (3, 4, 5, 2, 2, 12, 12, 1),
               (1, 16, 5, 1, 2, 14, 14, 1), (2, 3, 3, 2, 0, 7, 9, 1), (2, 2, (3, 5), (1, 2), (0, 1), 9, 8, 1),
               (2, 3, 3, 1, 2, 7, 7, 2), (2, 3, 4, 1, "same", 6, 6, 1), (1, 2, 3, 3, 1, 9, 9, 1)]


@pytest.mark.parametrize("c_in,c_out,k,stride,pad,h,w,dil", ZERO_PADDED)
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_dft_norm_bounds_zero_padded_convs_and_power_iteration_agrees(c_in, c_out, k, stride, pad, h, w, dil) -> None:
    conv = _conv(c_in, c_out, k, seed=h * w, stride=stride, padding=pad, dilation=dil)
    bound = conv2d_operator_norm(conv, (h, w))
    explicit = explicit_operator_norm(conv, (c_in, h, w))
    power = power_iteration_norm(conv, (c_in, h, w), iters=300)
    assert explicit <= bound * (1 + 1e-9)  # an upper bound, tight to a few percent here
    assert bound <= 1.6 * explicit, f"bound {bound} looser than expected vs exact {explicit}"
    assert power <= explicit * (1 + 1e-9) and power == pytest.approx(explicit, rel=1e-3)


def test_dft_on_the_unpadded_grid_would_not_bound_zero_padding() -> None:
    """The docstring's example: a 1-pixel input, taps [1, 1, -2]: exact norm 1, circular norm on 1 pixel 0."""
    conv = nn.Conv2d(1, 1, (1, 3), padding=(0, 1), bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, 1.0, -2.0]]]]))
    assert explicit_operator_norm(conv, (1, 1, 1)) == pytest.approx(1.0)
    assert conv2d_operator_norm(conv, (1, 1)) >= 1.0 - 1e-12


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
@pytest.mark.parametrize("stride", [1, 2])
def test_other_padding_modes_are_bounded(mode: str, stride: int) -> None:
    conv = _conv(2, 3, 3, seed=stride, stride=stride, padding=1, padding_mode=mode)
    assert explicit_operator_norm(conv, (2, 8, 8)) <= conv2d_operator_norm(conv, (8, 8)) * (1 + 1e-9)


def test_linear_bound_equals_spectral_norm() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(300, 70)
    (b,) = layer_bounds(nn.Sequential(layer), (300,), verify=True)
    assert b.bound == pytest.approx(float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2)), rel=1e-9)
    assert b.exact and 0.95 * b.bound <= b.lower <= b.bound * (1 + 1e-9)  # power iteration: from below


def test_nested_sequential_of_affine_layers_product_bounds_the_exact_norm() -> None:
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(4)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.2, 3)
    bn.weight.data.uniform_(-2, 2)
    net = nn.Sequential(OrderedDict([
        ("block", nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), bn)),
        ("pool", nn.AvgPool2d(2)), ("overlap", nn.AvgPool2d(3, stride=1, padding=1)),
        ("flat", nn.Flatten()), ("fc", nn.Linear(4 * 4 * 4, 5))])).double().eval()
    bounds = layer_bounds(net, (2, 8, 8), verify=True)
    assert [b.name for b in bounds] == ["block.0", "block.1", "pool", "overlap", "flat", "fc"]
    by = {b.name: b for b in bounds}
    assert by["pool"].bound == pytest.approx(0.5)  # Schur test is exact for disjoint windows
    assert by["block.1"].bound == pytest.approx(explicit_operator_norm(bn, (4, 3, 3)), rel=1e-9)
    for b in bounds:
        assert b.lower is None or b.lower <= b.bound * (1 + 1e-9)
    exact_whole = explicit_operator_norm(net, (2, 8, 8))  # the net is affine: its exact Lipschitz constant
    assert exact_whole <= lipschitz_bound(net, (2, 8, 8)) * (1 + 1e-9)


def test_pointwise_and_pooling_bounds() -> None:
    net = nn.Sequential(nn.Sigmoid(), nn.Tanh(), nn.ReLU(), nn.LeakyReLU(1.5), nn.ELU(0.5), nn.Dropout(0.3),
                        nn.MaxPool2d(2), nn.MaxPool2d(3, stride=1, padding=1), nn.Flatten())
    got = [b.bound for b in layer_bounds(net, (1, 8, 8))]
    assert got == pytest.approx([0.25, 1, 1, 1.5, 1, 1, 1, 3, 1])  # overlapping 3x3/1 max pool: sqrt(9)


@pytest.mark.parametrize("layer,name", [(nn.LayerNorm(4), "LayerNorm"), (nn.Softsign(), "Softsign"),
                                        (nn.BatchNorm1d(4, track_running_stats=False), "running statistics")])
def test_unsupported_layer_is_named(layer: nn.Module, name: str) -> None:
    net = nn.Sequential(OrderedDict([("fc", nn.Linear(4, 4)), ("odd", layer)]))
    with pytest.raises(SpecError, match=name) as err:
        layer_bounds(net, (4,))
    assert "'odd'" in str(err.value)


def test_rbf_model_is_refused_with_the_reason() -> None:
    with pytest.raises(SpecError, match="'rbf'.*RBFLayer.*no global Lipschitz bound"):
        layer_bounds(build_model("RBF"), (1, 28, 28))


def test_custom_forward_is_refused() -> None:
    class Residual(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + super().forward(x)

    with pytest.raises(SpecError, match="not its layers applied in order"):
        layer_bounds(Residual(nn.Linear(4, 4)), (4,))


def test_bad_input_shape_and_identical_pairs_raise_input_error() -> None:
    with pytest.raises(InputError, match="does not accept inputs"):
        layer_bounds(build_model("FC100-100-10"), (1, 20, 20))
    x = torch.rand(3, 1, 28, 28)
    with pytest.raises(InputError, match="x_adv == x"):
        empirical_ratio(build_model("FC100-100-10"), x, x.clone())


def _signed_gradient_pairs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """A few steps of our own signed-gradient ascent on the cross-entropy, kept in [0, 1]."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = (x_adv.detach() + eps / steps * g.sign()).clamp(0, 1)
    return x_adv


def _conv_sigma_max(conv: nn.Conv2d, ishape: tuple[int, ...]) -> float:
    """σ_max of a stride-1 conv's linear part by ARPACK on the conv as a linear map (adjoint: the transposed conv),
    independent of the package's DFT and power-iteration code."""
    w = conv.weight.detach().double()
    pad = conv.padding
    n_in = math.prod(ishape)
    out_shape = F.conv2d(torch.zeros(1, *ishape, dtype=torch.float64), w, padding=pad).shape[1:]
    n_out = math.prod(out_shape)

    def mv(v: np.ndarray) -> np.ndarray:
        return F.conv2d(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)).view(1, *ishape), w,
                        padding=pad).flatten().numpy()

    def rmv(u: np.ndarray) -> np.ndarray:
        return F.conv_transpose2d(torch.from_numpy(np.ascontiguousarray(u, dtype=np.float64)).view(1, *out_shape), w,
                                  padding=pad).flatten().numpy()

    op = LinearOperator((n_out, n_in), matvec=mv, rmatvec=rmv, dtype=np.float64)
    return float(svds(op, k=1, return_singular_vectors=False, random_state=0, tol=1e-8)[0])


def _independent_constants(model: nn.Module) -> list[tuple[str, float, bool]]:
    """(layer name, its ℓ2 Lipschitz constant computed here, exact?) for the zoo's layers: σ_max of the explicit
    weight matrix (torch.linalg.matrix_norm), ARPACK for the convs, the activations' known constants. For a zero-
    padded conv the package's DFT value is only an upper bound, so it is compared with a tolerance."""
    out, shape = [], (1, 28, 28)
    h = torch.zeros(1, *shape)
    for name, layer in model.named_children():
        if isinstance(layer, nn.Conv2d):
            out.append((name, _conv_sigma_max(layer, tuple(h.shape[1:])), False))
        elif isinstance(layer, nn.Linear):
            out.append((name, float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2)), True))
        elif isinstance(layer, Maxout):
            out.append((name, float(torch.linalg.matrix_norm(layer.linear.weight.detach().double(), ord=2)), True))
        else:
            known = {nn.Sigmoid: 0.25, nn.ReLU: 1.0, nn.MaxPool2d: 1.0, nn.Flatten: 1.0, nn.Dropout: 1.0}
            kind = nn.Dropout if isinstance(layer, nn.Dropout) else type(layer)  # the zoo's scaled dropout too
            out.append((name, known[kind], True))
        with torch.no_grad():
            h = layer.eval()(h)
    return out


# brief training runs (CNN ~8% test error, FC ~24%), shared with test_units through the session's model store
BRIEF = {"CNN": (2, 3000), "FC100-100-10": (3, 5000), "MAXOUT": (1, 1000)}


@pytest.mark.parametrize("spec", list(BRIEF))
def test_product_bound_matches_an_independent_computation(spec: str, model_store: Path) -> None:
    """Each layer's bound against its constant computed here without the package (a bound 10× off in any layer, or
    in the product, fails), then the product against empirical ratios on real MNIST pairs."""
    epochs, n = BRIEF[spec]
    tm = train(spec, epochs=epochs, train_subset=n, progress=False, store=model_store)
    model = tm.model.eval()
    bounds = layer_bounds(model, (1, 28, 28), verify=spec == "CNN", iters=60)
    bound = math.prod(b.bound for b in bounds)
    assert bound == pytest.approx(lipschitz_bound(model, (1, 28, 28)))
    independent = _independent_constants(model)
    assert [b.name for b in bounds] == [name for name, _, _ in independent]
    for b, (name, value, exact) in zip(bounds, independent):
        if exact:
            assert b.bound == pytest.approx(value, rel=1e-6), name
        else:  # the DFT bound of a zero-padded conv: above the exact norm, and close to it
            assert value * (1 - 1e-6) <= b.bound <= 1.1 * value, (name, b.bound, value)
        assert b.lower is None or b.lower <= value * (1 + 1e-6)
    exact_product = math.prod(v for _, v, _ in independent)
    assert exact_product * (1 - 1e-6) <= bound <= 1.1 ** sum(not e for _, _, e in independent) * exact_product
    test = load_mnist("test", subset=200)
    x, y = test.images, test.labels
    adv = _signed_gradient_pairs(model, x, y, eps=0.1, steps=3)
    moved = (adv - x).flatten(1).norm(dim=1) > 0
    noise = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    ratios = torch.cat([empirical_ratio(model, x[moved], adv[moved]), empirical_ratio(model, x, noise)])
    local = local_lipschitz(model, x[:50])
    assert float(ratios.max()) <= bound and float(local.max()) <= bound * (1 + 1e-5)
    assert "product" in format_bound_table(bounds)
    check = bound_check(model, x[moved][:50], adv[moved][:50], bound)  # the report's and the CLI's one check
    assert check["holds"] and check["ratio_max"] <= bound
    low = min(check["ratio_max"], check["local_jacobian_max"]) / 10  # a bound 10× too small must fail the check
    assert not bound_check(model, x[moved][:50], adv[moved][:50], low)["holds"]


def test_local_lipschitz_of_a_linear_model_is_its_spectral_norm() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 10))
    local = local_lipschitz(model, torch.rand(4, 1, 6, 6))
    expected = float(torch.linalg.matrix_norm(model[1].weight.detach().double(), ord=2))
    assert local.tolist() == pytest.approx([expected] * 4, rel=1e-5)
    assert lipschitz_bound(model, (1, 6, 6)) == pytest.approx(expected, rel=1e-9)
