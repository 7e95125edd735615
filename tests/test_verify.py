"""Certified bounds and exact minimal perturbations on small nets trained here on real MNIST (no mocks).

The invariant: certified radius ≤ exact minimal distortion (L∞, L1 by HiGHS; L2 by SCIP) ≤ the distortion of every
adversarial example the project's attacks find; a tighter relaxation never gives a looser bound (LP ≥ CROWN ≥ IBP)."""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from blindspots.attacks import Misclassification, Normalized, run_attack
from blindspots.data import load_mnist
from blindspots.errors import InputError
from blindspots.models.zoo import Maxout, RBFLayer
from blindspots.verify import (UnsupportedLayerError, attack_upper_bounds, certified, certified_radius,
                               exact_minimal, hidden_units, lp_margin_bounds, margin_bounds, unstable_units)

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-6


def fit(model: nn.Module, images: int = 10000, epochs: int = 1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for p in model.parameters():  # a fresh init drawn from the seed
        if p.dim() > 1:
            nn.init.kaiming_uniform_(p, a=5 ** 0.5)
    train = load_mnist("train", subset=images)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(images, generator=gen)
        for i in range(0, images, 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(train.images[b]), train.labels[b]).backward()
            opt.step()
    return model.eval()


def relu_net(*hidden: int) -> nn.Sequential:
    layers, width = [nn.Flatten()], 784
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 10))


@pytest.fixture(scope="module")
def net() -> nn.Module:
    return fit(relu_net(12, 12))


@pytest.fixture(scope="module")
def images(net: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 4 test images the net classifies correctly."""
    test = load_mnist("test", subset=40)
    with torch.no_grad():
        ok = net(test.images).argmax(1) == test.labels
    return test.images[ok][:4], test.labels[ok][:4]


def margins_at(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(x).double()
    return (logits.gather(1, y[:, None]) - logits).masked_fill(nn.functional.one_hot(y, 10).bool(), math.inf)


def test_tighter_relaxations_give_tighter_bounds_and_all_are_sound(net, images):
    x, y = images
    for eps in (0.01, 0.03):
        ibp = margin_bounds(net, x, y, eps, method="ibp")
        crown = margin_bounds(net, x, y, eps, method="crown")
        alpha = margin_bounds(net, x, y, eps, method="alpha-crown", alpha_steps=10)
        lp = lp_margin_bounds(net, x, y, eps)
        finite = torch.isfinite(crown)
        assert bool((crown[finite] >= ibp[finite] - TOL).all())
        assert bool((alpha[finite] >= crown[finite] - TOL).all())
        assert bool((lp[finite] >= crown[finite] - TOL).all())
        assert float((crown - ibp)[finite].mean()) > 0  # strictly tighter on average, not merely equal
        # sound: no sampled corner of the ball, nor PGD's point, gets below the bound
        gen = torch.Generator().manual_seed(1)
        for _ in range(20):
            xs = (x + eps * torch.randint(0, 2, x.shape, generator=gen).mul(2).sub(1)).clamp(0, 1)
            assert bool((margins_at(net, xs, y) >= lp - TOL).all())
        pgd = run_attack("pgd", net, x, Misclassification(y), [eps], steps=40)
        assert bool((margins_at(net, pgd.x_adv[0], y) >= lp - TOL).all())


def test_certified_radius_le_exact_le_every_attack_linf(net, images):
    x, y = images
    exact = exact_minimal(net, x, y, norm="linf", time_limit=300)  # wall clock: generous on a loaded machine
    assert exact.status == ["optimal"] * len(y)
    # re-verified: adversarial (a tie within tolerance), in the box, at the distance claimed
    assert bool(((exact.x_adv >= 0) & (exact.x_adv <= 1)).all())
    dist = (exact.x_adv - x.double()).flatten(1).abs().amax(1)
    assert bool((dist <= exact.value + 1e-6).all())
    m = margins_at(copy.deepcopy(net).double(), exact.x_adv, y).amin(1)
    assert bool((m <= 1e-4).all())
    assert bool((exact.lower <= exact.value).all()) and bool((exact.value <= exact.upper).all())
    for method in ("ibp", "crown"):
        radius = certified_radius(net, x, y, norm="linf", method=method)
        assert bool((radius <= exact.value + TOL).all()), method
        assert bool((radius > 0).all())
    crit = Misclassification(y)
    found = {"fgsm-min": run_attack("fgsm-min", net, x, crit).x_adv,
             "deepfool": run_attack("deepfool", net, x, crit).x_adv,
             "minimal-l2": run_attack("minimal-l2", net, x, crit).x_adv,
             "pgd-bisection": attack_upper_bounds(net, x, y, "linf")}
    for name, adv in found.items():
        ok = crit.is_adversarial(net(adv))
        linf = (adv - x).flatten(1).abs().amax(1).double()
        assert bool((exact.value[ok] <= linf[ok] + TOL).all()), name
    # just below the exact value PGD must fail (a certificate of the other side, checked by an attack)
    below = run_attack("pgd", net, x, crit, [float(exact.value.min()) * 0.99], steps=50, restarts=2)
    assert not bool(below.success.any())


def test_exact_l1_and_certified_l2_bracket_the_attacks(net, images):
    x, y = images[0][:1], images[1][:1]
    exact = exact_minimal(net, x, y, norm="l1", time_limit=60)
    crit = Misclassification(y)
    for name in ("deepfool", "minimal-l2"):
        r = run_attack(name, net, x, crit)
        l1 = (r.x_adv - x).flatten(1).abs().sum(1).double()
        proven = torch.tensor([s == "optimal" for s in exact.status])
        assert bool((exact.lower <= l1 + TOL)[r.success].all()), name
        assert bool((exact.value <= l1 + TOL)[r.success & proven].all()), name
        r2 = certified_radius(net, x, y, norm="l2")
        assert bool((r2 <= r.l2.double() + TOL)[r.success].all()), name
    assert bool((certified_radius(net, x, y, norm="l1") <= exact.lower + TOL).all())


def test_certified_radius_le_exact_le_every_attack_l2(images):
    """Exact minimal L2 (SCIP): one image solved to optimality and re-verified, one stopped by a short time limit
    with its proven bounds; both bracketed by the CROWN radius below and every L2 attack above."""
    x, y = images
    small = fit(relu_net(8, 8))
    with torch.no_grad():
        ok = small(x).argmax(1) == y
    x, y = x[ok][:2], y[ok][:2]
    solved = exact_minimal(small, x[:1], y[:1], norm="l2", time_limit=300)  # ~5 s; generous on a loaded machine
    limited = exact_minimal(small, x[1:], y[1:], norm="l2", time_limit=5)
    assert solved.status == ["optimal"] and limited.status[0] in ("optimal", "time_limit")
    value = torch.cat([solved.value, limited.value])
    lower, upper = torch.cat([solved.lower, limited.lower]), torch.cat([solved.upper, limited.upper])
    x_adv = torch.cat([solved.x_adv, limited.x_adv])
    # re-verified: in the box, at the distance claimed, adversarial (a tie within tolerance)
    assert bool(((x_adv >= 0) & (x_adv <= 1)).all())
    dist = (x_adv - x.double()).flatten(1).norm(dim=1)
    assert bool((dist <= upper + 1e-6).all())
    assert float(dist[0]) == pytest.approx(float(value[0]), abs=1e-6)
    assert bool((margins_at(copy.deepcopy(small).double(), x_adv, y).amin(1) <= 1e-4).all())
    assert bool((0 <= lower).all()) and bool((lower <= upper).all()) and float(lower[0]) <= float(value[0])
    radius = certified_radius(small, x, y, norm="l2")
    # both radii are sound; this one bisects [0, √784] (step √784/2¹⁶), the exact program's cut [0, the attack's
    # distortion]: a time-limited lower bound that is the cut may sit one bisection step below it
    assert bool((radius > 0).all()) and bool((radius <= lower + 784 ** 0.5 / 2 ** 16 + TOL).all())
    crit = Misclassification(y)
    for name, params in (("minimal-l2", {}), ("deepfool", {}), ("cw", {"steps": 50, "search_steps": 3})):
        r = run_attack(name, small, x, crit, **params)
        assert bool(r.success[0]), name
        l2 = (r.x_adv - x).flatten(1).norm(dim=1).double()
        assert bool((lower <= l2 + TOL)[r.success].all()), name
        assert float(value[0]) <= float(l2[0]) + TOL, name


def test_time_limit_returns_proven_bounds(images):
    x, y = images
    wide = fit(relu_net(40, 40), images=5000)
    r = exact_minimal(wide, x[:1], y[:1], norm="linf", time_limit=0.05)
    assert r.status[0] in ("time_limit", "optimal")
    assert 0 <= float(r.lower[0]) <= float(r.upper[0]) < math.inf
    if r.status[0] == "time_limit":
        assert math.isnan(float(r.value[0]))


def test_sigmoid_net_gets_crown_bounds_below_the_attack():
    model = fit(nn.Sequential(nn.Flatten(), nn.Linear(784, 20), nn.Sigmoid(), nn.Linear(20, 20), nn.Tanh(),
                              nn.Linear(20, 10)), images=5000)
    test = load_mnist("test", subset=8)
    x, y = test.images, test.labels
    crown, ibp = margin_bounds(model, x, y, 0.01), margin_bounds(model, x, y, 0.01, method="ibp")
    finite = torch.isfinite(crown)
    assert bool((crown[finite] >= ibp[finite] - TOL).all())
    radius = certified_radius(model, x, y, norm="linf")
    adv = attack_upper_bounds(model, x, y, "linf")
    found = torch.isfinite(adv).flatten(1).all(1)
    linf = (adv - x).flatten(1).abs().amax(1).double()
    assert bool(found.any()) and bool((radius[found] <= linf[found] + TOL).all())
    with pytest.raises(UnsupportedLayerError, match="piecewise-linear"):
        exact_minimal(model, x[:1], y[:1], attack=False)


def test_conv_pool_maxout_and_normalized_layers_are_bounded_soundly():
    conv = fit(Normalized(nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(1, 4, 5, stride=2)), ("relu", nn.ReLU()), ("avg", nn.AvgPool2d(2)),
        ("conv2", nn.Conv2d(4, 4, 3, padding=1)), ("relu2", nn.ReLU()), ("pool", nn.MaxPool2d(2)),
        ("flat", nn.Flatten()), ("drop", nn.Dropout(0.1)), ("fc", nn.Linear(4 * 3 * 3, 10))])), 0.1307, 0.3081),
        images=3000)
    maxout = fit(nn.Sequential(nn.Flatten(), Maxout(784, 12, 3), nn.Dropout(0.2), nn.Linear(12, 10)), images=3000)
    test = load_mnist("test", subset=4)
    x, y = test.images, test.labels
    for model in (conv, maxout):
        for norm, eps in (("linf", 0.02), ("l2", 0.3)):
            ibp = margin_bounds(model, x, y, eps, norm=norm, method="ibp")
            crown = margin_bounds(model, x, y, eps, norm=norm)
            finite = torch.isfinite(crown)
            assert bool((crown[finite] >= ibp[finite] - TOL).all())
            pgd = run_attack("pgd", model, x, Misclassification(y), [eps], norm=norm, steps=30)
            assert bool((margins_at(model, pgd.x_adv[0], y) >= crown - TOL).all())
            assert not bool((certified(model, x, y, eps, norm=norm) & pgd.success[0]).any())
        # the exact program's size: IBP's looser bounds count at least CROWN's unstable units, and both grow with ε
        small, large = ([unstable_units(model, x, e, method=m) for m in ("crown", "ibp")] for e in (0.01, 0.05))
        assert bool((small[1] >= small[0]).all() and (large[1] >= large[0]).all())
        assert bool((large[0] >= small[0]).all() and (large[0] > 0).any())
        assert bool((large[1] <= hidden_units(model, tuple(x.shape[1:]))).all())
    exact = exact_minimal(maxout, x[:2], y[:2], norm="linf", time_limit=60)
    radius = certified_radius(maxout, x[:2], y[:2])
    assert bool((radius <= exact.lower + TOL).all())
    proven = torch.tensor([s == "optimal" for s in exact.status])
    assert bool((exact.value[proven] <= attack_upper_bounds(maxout, x[:2], y[:2], "linf").sub(x[:2]).flatten(1)
                 .abs().amax(1).double()[proven] + TOL).all())


def test_unsupported_layer_is_named():
    model = nn.Sequential(OrderedDict([("flatten", nn.Flatten()), ("rbf", RBFLayer(784, 10))]))
    x, y = load_mnist("test", subset=2).images, load_mnist("test", subset=2).labels
    with pytest.raises(UnsupportedLayerError, match=r"'rbf' \(RBFLayer\)"):
        margin_bounds(model, x, y, 0.1)
    gelu = nn.Sequential(OrderedDict([("flatten", nn.Flatten()), ("fc", nn.Linear(784, 10)), ("act", nn.GELU())]))
    with pytest.raises(UnsupportedLayerError, match=r"'act' \(GELU\)"):
        certified_radius(gelu, x, y)
    with pytest.raises(InputError, match="'l2'"):
        exact_minimal(relu_net(4), x, y, norm="l3")
