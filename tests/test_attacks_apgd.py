"""APGD (Croce & Hein 2020) on real MNIST with a really trained small ReLU net: its step-size checkpoints, at least
as strong as PGD at the same budget, the DLR loss where the cross-entropy saturates (logits × 1000), targeted runs,
and BPDA through input rounding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blindspots.attacks import Misclassification, TargetedMisclassification, pgd, run_attack, verify
from blindspots.attacks.apgd import apgd, checkpoints
from blindspots.attacks.bpda import StraightThrough, gradient_probe
from blindspots.data import load_mnist
from blindspots.errors import InputError
from blindspots.models.controls import GradientMasked, fit_control, relu_mlp

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def relu_net(one_thread: None) -> nn.Module:
    """784-128-10 ReLU, 3 epochs of Adam on 10,000 MNIST training images (~96% test accuracy)."""
    return fit_control(relu_mlp(128), images=10_000, epochs=3, batch=100)


def test_checkpoints_follow_the_paper() -> None:
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10)[0] == 2 and checkpoints(10)[-1] <= 10


def test_apgd_at_least_as_strong_as_pgd(relu_net: nn.Module) -> None:
    test = load_mnist("test", subset=300)
    x, y = test.images, test.labels
    assert float((relu_net(x).argmax(1) == y).double().mean()) > 0.9
    for eps in (0.03, 0.05):
        p = pgd(relu_net, x, Misclassification(y), [eps], steps=20, seed=0)
        a = apgd(relu_net, x, Misclassification(y), [eps], steps=20, seed=0)
        d = apgd(relu_net, x, Misclassification(y), [eps], steps=20, loss="dlr", seed=0)
        assert torch.equal(a.success, verify(relu_net, a.x_adv, Misclassification(y), per_budget=True))
        assert float(a.linf.max()) <= eps + 1e-6
        found_p, found_a = int(p.success.sum()), int((a.success | d.success).sum())
        assert found_a >= found_p, (eps, found_a, found_p)
        assert 0 < found_p < 300  # a budget where the attacks can differ


def test_dlr_where_cross_entropy_saturates_and_bpda_through_rounding(relu_net: nn.Module) -> None:
    test = load_mnist("test", subset=200)
    x, y = test.images, test.labels
    masked = GradientMasked(relu_net).eval()
    probe = gradient_probe(masked, x[:64], Misclassification(y[:64]))
    assert probe["masked"] and probe["ce_saturated"]
    assert not gradient_probe(relu_net, x[:64], Misclassification(y[:64]))["masked"]
    plain = pgd(masked, x, Misclassification(y), [0.3], steps=20)  # the masked gradient: PGD barely moves
    through = StraightThrough(masked)
    assert torch.equal(through(x), masked(x))  # same outputs, only the gradient differs
    ce = apgd(through, x, Misclassification(y), [0.3], steps=20)
    dlr = apgd(through, x, Misclassification(y), [0.3], steps=20, loss="dlr")
    assert float(plain.success.double().mean()) < 0.5
    assert float(dlr.success.double().mean()) >= 0.95
    assert float(dlr.success.double().mean()) > float(ce.success.double().mean()) + 0.3  # CE saturates at × 1000
    assert torch.equal(verify(masked, dlr.x_adv, Misclassification(y), per_budget=True), dlr.success)


def test_targeted_apgd_dlr(relu_net: nn.Module) -> None:
    test = load_mnist("test", subset=100)
    x, y = test.images, test.labels
    target = (y + 1) % 10
    r = run_attack("apgd", relu_net, x, TargetedMisclassification(target, y), [0.15], steps=20, loss="dlr")
    hit = relu_net(r.x_adv[0]).argmax(1) == target
    assert torch.equal(r.success[0], hit) and float(hit.double().mean()) > 0.5
    with pytest.raises(InputError, match="labels"):
        apgd(relu_net, x, TargetedMisclassification(target), [0.15], loss="dlr")


class Quantise(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.floor(x * 4 + 0.5) / 4


def test_bpda_named_layer_and_the_probe_names_it(relu_net: nn.Module) -> None:
    x, y = load_mnist("test", subset=32).images, load_mnist("test", subset=32).labels
    model = nn.Sequential(Quantise(), relu_net).eval()
    probe = gradient_probe(model, x, Misclassification(y))
    assert probe["masked"] and probe["zero_layers"] == ["0"]
    through = StraightThrough(model, ["0"], functions=False)  # the layer alone, as `--bpda 0` asks
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(Misclassification(y).loss(through(xg), "margin").sum(), xg)
    assert bool(g.flatten(1).any(1).all()) and torch.equal(through(x), model(x))
    with pytest.raises(InputError, match="no such layer"):
        StraightThrough(model, ["quantiser"])
