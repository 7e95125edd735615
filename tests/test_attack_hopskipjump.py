"""HopSkipJump (decision-based, top-1 label only) on real MNIST with a really trained small ReLU net: the attack
contract, its query budget, seeded determinism, no autograd at all (it runs a model that refuses a graph, and one
whose output has no graph to the input), L2 and L∞ distances close to the gradient minimal attacks', and targeted
runs from given starts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blindspots.attacks import (ATTACKS, Misclassification, TargetedMisclassification, deepfool, hopskipjump,
                                random_targets, run_attack, verify)
from blindspots.data import load_mnist
from blindspots.errors import InputError
from blindspots.models import predict
from blindspots.models.controls import fit_control, relu_mlp

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def relu_net(one_thread: None) -> nn.Module:
    """784-128-10 ReLU, 2 epochs of Adam on 5,000 MNIST training images (~93% test accuracy)."""
    return fit_control(relu_mlp(128), images=5000, epochs=2, batch=100)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_mnist("test", subset=16)
    return d.images, d.labels


class NoGraph(nn.Module):
    """The net, refusing to run while autograd records: a decision-based attack must never need a graph."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            raise AssertionError("forward pass with autograd on")
        return self.net(x)


class Binarised(nn.Module):
    """The net on x > 0.5: the comparison leaves no graph from the output back to the input."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x > 0.5).float())


def test_contract_budget_and_determinism(relu_net: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    relu_net.train()
    for p in relu_net.parameters():
        p.requires_grad_(True)
        p.grad = None
    try:
        res = hopskipjump(relu_net, x, Misclassification(y), max_queries=600, seed=1)
        assert relu_net.training and all(p.requires_grad and p.grad is None for p in relu_net.parameters())
    finally:
        relu_net.eval()
    assert ATTACKS["hopskipjump"].fn is hopskipjump and ATTACKS["hopskipjump"].minimal
    assert res.attack == "hopskipjump-l2" and res.x_adv.shape == x.shape and res.n_backward == 0
    assert torch.equal(res.success, predict(relu_net, res.x_adv) != y)  # re-verified by a fresh forward pass
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    q = res.extras["queries"]
    assert int(q.max()) <= 600 and int(q.sum()) == res.n_forward  # every query is one counted forward image
    assert bool((q[res.clean_error] == 0).all()) and torch.equal(res.x_adv[res.clean_error], x[res.clean_error])
    assert bool(res.success[~res.clean_error].all())
    assert bool((res.extras["iterations"][~res.clean_error] >= 2).all())
    again = hopskipjump(relu_net, x, Misclassification(y), max_queries=600, seed=1)
    assert torch.equal(again.x_adv, res.x_adv)
    other = hopskipjump(relu_net, x, Misclassification(y), max_queries=600, seed=2)
    assert not torch.equal(other.x_adv, res.x_adv)
    with pytest.raises(InputError, match="norm"):
        hopskipjump(relu_net, x, Misclassification(y), norm="l1")
    with pytest.raises(InputError, match="max_evals"):
        hopskipjump(relu_net, x, Misclassification(y), init_evals=200, max_evals=100)
    with pytest.raises(InputError, match="starts"):
        hopskipjump(relu_net, x, Misclassification(y), starts=x[:3])


def test_no_autograd_and_no_graph_to_the_input(relu_net: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    """It runs a model that raises when autograd records, and breaks input binarisation by comparison (no graph from
    the output back to the input at all)."""
    x, y = data
    res = hopskipjump(NoGraph(relu_net), x, Misclassification(y), max_queries=400)
    assert res.n_backward == 0 and bool(res.success[~res.clean_error].all())
    binarised = Binarised(relu_net)
    b = hopskipjump(binarised, x, Misclassification(y), max_queries=1000)
    assert torch.equal(b.success, predict(binarised, b.x_adv) != y)
    assert int(b.success[~b.clean_error].sum()) >= int((~b.clean_error).sum()) - 1


def test_close_to_the_gradient_minimal_attacks(relu_net: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Same images, same net, 3,000 queries: HopSkipJump's median L2 within 1.75× that of minimal-l2 (the boundary
    projection, close to the exact minimum) and of DeepFool, its per-image ratio to minimal-l2 within 1.5× at the
    median; its L∞ within 2× FGSM's smallest ε. Measured on these digits: 1.54×, 1.54×, 1.26× and 1.32×."""
    x, y = data
    crit = Misclassification(y)
    h = hopskipjump(relu_net, x, crit, max_queries=3000)
    m = run_attack("minimal-l2", relu_net, x, crit)
    d = deepfool(relu_net, x, crit)
    ok = ~h.clean_error & h.success & m.success & d.success
    assert int(ok.sum()) >= 12 and h.n_backward == 0
    ratio_min = float(h.l2[ok].median() / m.l2[ok].median())
    ratio_df = float(h.l2[ok].median() / d.l2[ok].median())
    per_image = float((h.l2[ok] / m.l2[ok]).median())
    assert 0.95 <= ratio_min <= 1.75 and ratio_df <= 1.75 and per_image <= 1.5, (ratio_min, ratio_df, per_image)
    hi = hopskipjump(relu_net, x, crit, norm="linf", max_queries=3000)
    f = run_attack("fgsm-min", relu_net, x, crit)
    both = ~hi.clean_error & hi.success & f.success
    assert hi.attack == "hopskipjump-linf" and int(both.sum()) >= 12
    assert float(hi.linf[both].median()) <= 2 * float(f.linf[both].median())
    assert float(hi.linf[both].median()) < float(h.linf[both].median())  # it minimises the norm it is asked for


def test_targeted_from_given_starts(relu_net: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    t = random_targets(y, seed=0)
    pool = load_mnist("test", subset=200)
    starts = torch.stack([pool.images[(pool.labels == c).nonzero()[0, 0]] for c in t.tolist()])
    crit = TargetedMisclassification(t, y)
    res = hopskipjump(relu_net, x, crit, starts=starts, max_queries=800)
    assert torch.equal(res.success, verify(relu_net, res.x_adv, crit))
    assert int(res.success.sum()) >= 14
    assert torch.equal(predict(relu_net, res.x_adv)[res.success], t[res.success])
    assert bool((res.l2[res.success] < (starts - x).flatten(1).norm(dim=1)[res.success]).all())
