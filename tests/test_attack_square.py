"""The Square Attack (gradient-free random search, L∞ and L2): the attack contract, seeded determinism, strength on a
real MNIST MLP, on softmax regression never beyond the exact L∞ robust error (computable in closed form), and L2
through the input rounding of the gradient-masked control where gradient attacks fail."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blindspots.attacks import (ATTACKS, Misclassification, TargetedMisclassification, apgd, pgd, random_targets,
                                square, verify)
from blindspots.attacks.square import meta_square
from blindspots.data import load_mnist
from blindspots.errors import InputError
from blindspots.models import predict, train
from blindspots.models.controls import GradientMasked, fit_control, relu_mlp

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


def test_square_l2_keeps_the_contract(linear: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data[0][:20], data[1][:20]
    eps = [0.0, 0.5, 1.5]
    res = square(linear, x, Misclassification(y), eps, norm="l2", n_queries=200, seed=3)
    assert res.attack == "square-l2" and res.params["norm"] == "l2"
    assert res.x_adv.shape == (3, *x.shape) and res.success.shape == (3, 20)
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1  # clipped to the box
    assert torch.equal(res.x_adv[0], x)  # ε = 0 changes nothing
    for k, e in enumerate(eps):
        size = (res.x_adv[k] - x).flatten(1).double().norm(dim=1)
        assert float(size.max()) <= e * (1 + 1e-6) + 1e-6  # within the L2 ball after clipping to the box
    assert float(res.l2[2].max()) > 1.0  # the search moves on the ε-sphere (less where clipping cuts it)
    assert torch.equal(res.success, verify(linear, res.x_adv, Misclassification(y), per_budget=True))
    assert int(res.success[2].sum()) > int(res.success[1].sum()) > 0
    q = res.extras["queries"]
    assert int(q.max()) <= 200 and bool((q[1:][res.success[1:] & ~res.clean_error] < 200).all())
    again = square(linear, x, Misclassification(y), eps[1:], norm="l2", n_queries=200, seed=3)
    assert torch.equal(again.x_adv, res.x_adv[1:])  # deterministic per seed
    other = square(linear, x, Misclassification(y), eps[1:], norm="l2", n_queries=200, seed=4)
    assert not torch.equal(other.x_adv, again.x_adv)
    with pytest.raises(InputError, match="norm"):
        square(linear, x, Misclassification(y), [0.5], norm="l1")


def test_square_l2_meta_square_is_the_papers() -> None:
    """η for a 5-pixel window, as the authors' code (and torchattacks' `eta`) builds it: nested rectangles
    weighted 1/(k+1)² in the top 2 rows, their negative in the bottom 3, at unit L2 (values from torchattacks 3.5.1)."""
    e = meta_square(5)
    assert float(e.norm()) == pytest.approx(1.0)
    assert [round(float(v), 4) for v in e[:, 2]] == [0.1598, 0.6022, -0.1482, -0.5585, -0.1482]
    assert [round(float(v), 4) for v in e[0]] == [0.0492, 0.1598, 0.1598, 0.1598, 0.0492]
    assert bool((e[:2] > 0).all()) and bool((e[2:] < 0).all())


def test_square_l2_sees_through_input_rounding(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The masked control (a ReLU net behind rounding to quarters, logits × 1000): gradient attacks' spread-out small
    steps stay under the rounding, Square-L2's concentrated squares cross it. Measured on these 100 digits at ε = 1:
    Square-L2 (1000 queries) 69% robust, APGD-L2 and PGD-L2 ~90%+; AutoAttack's L2 Square (5000 queries) 49–51%."""
    x, y = data
    masked = GradientMasked(fit_control(relu_mlp(128), images=10_000, epochs=3, batch=100)).eval()
    crit = Misclassification(y)
    sq = square(masked, x, crit, [1.0], norm="l2", n_queries=1000, seed=0)
    grad = apgd(masked, x, crit, [1.0], norm="l2").success[0] | pgd(masked, x, crit, [1.0], norm="l2").success[0]
    size = (sq.x_adv[0] - x).flatten(1).norm(dim=1)
    assert float(size.max()) <= 1 + 1e-5 and float(sq.x_adv.min()) >= 0 and float(sq.x_adv.max()) <= 1
    assert torch.equal(sq.success[0], predict(masked, sq.x_adv[0]) != y)  # re-verified by a forward pass
    assert int(sq.success[0].sum()) >= int(grad.sum()) + 15, (int(sq.success[0].sum()), int(grad.sum()))
    assert int((sq.success[0] & ~grad).sum()) >= 15
