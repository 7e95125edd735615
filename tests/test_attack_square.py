"""The Square Attack (gradient-free L∞ random search): the attack contract, seeded determinism, strength on a real
MNIST MLP, and on softmax regression never beyond the exact L∞ robust error (computable in closed form)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blindspots.attacks import ATTACKS, Misclassification, TargetedMisclassification, pgd, random_targets, square, verify
from blindspots.data import load_mnist
from blindspots.errors import InputError
from blindspots.models import predict, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_mnist("test", subset=100)
    return d.images, d.labels


@pytest.fixture(scope="module")
def trained_mlp(one_thread: None) -> nn.Module:
    """FC100-100-10 trained long enough to be a real classifier (~10% test error)."""
    return train("FC100-100-10", train_subset=5000, epochs=5, progress=False).model


def test_square_keeps_the_contract(linear: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data[0][:20], data[1][:20]
    linear.train()
    for p in linear.parameters():
        p.requires_grad_(True)
        p.grad = None
    try:
        res = square(linear, x, Misclassification(y), [0.0, 0.05, 0.2], n_queries=200, seed=3)
        assert linear.training and all(p.requires_grad and p.grad is None for p in linear.parameters())
    finally:
        linear.eval()
    assert ATTACKS["square"].fn is square and ATTACKS["square"].budgets == "epsilons"
    assert res.x_adv.shape == (3, *x.shape) and res.success.shape == (3, 20)
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert torch.equal(res.x_adv[0], x)  # ε = 0 changes nothing
    for k, e in enumerate((0.0, 0.05, 0.2)):
        assert float(res.linf[k].max()) <= e + 1e-6
    assert torch.equal(res.success, verify(linear, res.x_adv, Misclassification(y), per_budget=True))
    q = res.extras["queries"]
    assert q.shape == (3, 20) and int(q.max()) <= 200 and int(q.min()) >= 1
    assert bool((q[1:][res.success[1:] & ~res.clean_error] < 200).all()), "a success stops the image's queries"
    again = square(linear, x, Misclassification(y), [0.05, 0.2], n_queries=200, seed=3)
    assert torch.equal(again.x_adv, res.x_adv[1:])  # deterministic per seed, global RNG untouched
    other = square(linear, x, Misclassification(y), [0.05, 0.2], n_queries=200, seed=4)
    assert not torch.equal(other.x_adv, again.x_adv)
    with pytest.raises(InputError, match=r"\[N, C, H, W\]"):
        square(linear, x.flatten(1), Misclassification(y), [0.1])
    with pytest.raises(InputError, match="p_init"):
        square(linear, x, Misclassification(y), [0.1], p_init=2.0)
    with pytest.raises(InputError, match="bounds|lie in"):
        square(linear, x * 2, Misclassification(y), [0.1])


def test_square_targeted_reaches_its_targets(linear: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data[0][:30], data[1][:30]
    t = random_targets(y, seed=0)
    res = square(linear, x, TargetedMisclassification(t, y), [0.3], n_queries=300)
    hit = res.success[0]
    assert int(hit.sum()) >= 20
    assert torch.equal(predict(linear, res.x_adv[0])[hit], t[hit])


def test_square_breaks_a_real_mnist_mlp(trained_mlp: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    res = square(trained_mlp, x, Misclassification(y), [0.3], n_queries=500)
    attacked = ~res.clean_error
    assert int(attacked.sum()) >= 80
    rate = float(res.success[0][attacked].float().mean())
    assert rate >= 0.9, f"square fooled only {rate:.0%} of the correctly classified digits at ε = 0.3"


def _exact_linf_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Softmax regression: for each rival class j the margin z_y − z_j is linear in x, so its minimum over the ε-box
    ∩ [0, 1] puts every pixel at the end that the sign of w_y − w_j picks; adversarial iff one such minimum is < 0."""
    (layer,) = [m for m in model.modules() if isinstance(m, nn.Linear)]
    w, b = layer.weight.detach().double(), layer.bias.detach().double()
    flat = x.flatten(1).double()
    lo, hi = (flat - eps).clamp(min=0), (flat + eps).clamp(max=1)
    out = torch.zeros(len(y), dtype=torch.bool)
    for j in range(w.shape[0]):
        d = w[y] - w[j]  # [N, D]
        worst = torch.where(d > 0, lo, hi)
        margin = (d * worst).sum(1) + b[y] - b[j]
        out |= (y != j) & (margin < -1e-9)
    return out


def test_square_never_beats_the_exact_answer_on_softmax_regression(linear: nn.Module,
                                                                   data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    eps = 0.08
    exact = _exact_linf_error(linear, x, y, eps)
    sq = square(linear, x, Misclassification(y), [eps], n_queries=2000).success[0]
    gd = pgd(linear, x, Misclassification(y), [eps]).success[0]
    assert 20 <= int(exact.sum()) <= 90, "ε must leave both robust and non-robust images"
    assert not bool((sq & ~exact).any()), "square 'succeeded' where no perturbation within ε exists"
    assert not bool((gd & ~exact).any())
    assert int(sq.sum()) <= int(gd.sum()) + 2, "gradient-free square beat PGD on a linear model"
    assert int(sq.sum()) >= int(exact.sum()) - 12, "square found far fewer than the exact number"  # 68 of 75
