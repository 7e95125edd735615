"""The boundary-projection minimal L2 attack: the exact box-constrained projection, the closed-form answer
on a linear model, fresh re-verification, the box, determinism, and never exceeding an L-BFGS start.
Real MNIST, real (small) trained models, no mocks."""

from __future__ import annotations

import pytest
import torch

from blindspots.attacks import Misclassification, TargetedMisclassification, lbfgs_attack, random_targets
from blindspots.attacks.minimal import minimal_l2_attack
from blindspots.attacks.projection import project_halfspace_box
from blindspots.data import load_mnist
from blindspots.errors import InputError
from blindspots.models import predict_logits, train


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mlp() -> torch.nn.Module:
    return train("FC100-100-10", train_subset=3000, epochs=10, progress=False).model  # 9.6% test error


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_mnist("test", subset=40)
    return d.images, d.labels


def _bisection_projection(x: torch.Tensor, g: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The same projection found the slow way: bisection on λ in clip(x − λg, 0, 1) (float64, 200 steps)."""
    x, g, c = x.double(), g.double(), c.double()
    lo, hi = torch.zeros_like(c), torch.full_like(c, 1e6)
    for _ in range(200):
        mid = (lo + hi) / 2
        ok = ((x - mid.unsqueeze(1) * g).clamp(0, 1) * g).sum(1) <= c
        hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
    return (x - hi.unsqueeze(1) * g).clamp(0, 1)


def test_projection_is_exact_with_the_box_active(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    x = images[0].flatten(1)  # real digits: most pixels sit at 0, so the box binds
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    c = torch.linalg.vecdot(g, x) - torch.linspace(0.5, 40, x.shape[0])
    p, feasible = project_halfspace_box(x, g, c)
    assert bool(feasible.all())
    assert bool(((p >= 0) & (p <= 1)).all())
    assert float(((g.double() * p.double()).sum(1) - c).abs().max()) < 1e-3  # lands on the plane
    assert torch.allclose(p.double(), _bisection_projection(x, g, c), atol=1e-5)
    # already inside the half-space: x itself; out of the box's reach: infeasible, flagged
    p_in, ok_in = project_halfspace_box(x, g, torch.linalg.vecdot(g, x) + 1)
    assert torch.equal(p_in, x) and bool(ok_in.all())
    _, ok_far = project_halfspace_box(x, g, torch.full_like(c, -1e9))
    assert not bool(ok_far.any())


def test_exact_on_a_linear_model(linear: torch.nn.Module, images: tuple[torch.Tensor, torch.Tensor]) -> None:
    # softmax regression: the adversarial set is the union over j of {z_j ≥ z_y}, so the minimal L2 inside
    # the box is min_j of the distance from x to each half-space ∩ box (computed here by bisection)
    x, y = images
    lin = next(m for m in linear.modules() if isinstance(m, torch.nn.Linear))
    W, b = lin.weight.detach().double(), lin.bias.detach().double()
    right = predict_logits(linear, x).argmax(1) == y
    x, y = x[right], y[right]
    flat = x.flatten(1)
    exact = torch.full((x.shape[0],), float("inf"), dtype=torch.float64)
    for j in range(10):
        g = W[y] - W[j]  # z_y − z_j = g·x + (b_y − b_j) ≤ 0
        p = _bisection_projection(flat, g, b[j] - b[y])
        exact = torch.where(y != j, torch.minimum(exact, (p - flat.double()).norm(dim=1)), exact)
    res = minimal_l2_attack(linear, x, Misclassification(y), lanes=1)
    assert bool(res.success.all())
    rel = (res.l2.double() - exact) / exact
    assert float(rel.min()) > -1e-4  # never below the true minimum
    assert float(rel.max()) < 1e-3  # and on it, to the bisection's precision


def test_adversarial_by_a_fresh_pass_inside_the_box_deterministic(
        mlp: torch.nn.Module, images: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = images
    mlp.train()
    flags = [p.requires_grad for p in mlp.parameters()]
    res = minimal_l2_attack(mlp, x, Misclassification(y))
    assert mlp.training and [p.requires_grad for p in mlp.parameters()] == flags  # mode and flags restored
    pred = predict_logits(mlp, res.x_adv).argmax(1)
    assert torch.equal(res.success, pred != y)
    assert bool(res.success.all())
    assert bool(((res.x_adv >= 0) & (res.x_adv <= 1)).all())
    clean_wrong = predict_logits(mlp, x).argmax(1) != y
    assert torch.equal(res.extras["clean_adversarial"], clean_wrong)
    assert bool((res.l2[clean_wrong] == 0).all()) and bool((res.l2[~clean_wrong] > 0).all())
    again = minimal_l2_attack(mlp, x, Misclassification(y))
    assert torch.equal(again.x_adv, res.x_adv)


def test_never_larger_than_the_lbfgs_start(mlp: torch.nn.Module, images: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = images
    crit = Misclassification(y)
    start = lbfgs_attack(mlp, x, crit, search_steps=3)
    attacked = start.success & ~start.extras["clean_adversarial"]
    assert int(attacked.sum()) >= 10
    res = minimal_l2_attack(mlp, x, crit, init=start.x_adv, steps=5, lanes=1)
    assert bool(res.success[start.success].all())
    assert bool((res.l2[attacked] <= start.l2[attacked] * (1 + 1e-6)).all())
    assert float(res.l2[attacked].median()) < float(start.l2[attacked].median())


def test_targeted_reaches_the_target(mlp: torch.nn.Module, images: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = images[0][:16], images[1][:16]
    crit = TargetedMisclassification(random_targets(y, seed=0), y)
    alone = minimal_l2_attack(mlp, x, crit)
    pred = predict_logits(mlp, alone.x_adv).argmax(1)
    assert torch.equal(alone.success, pred == crit.targets)
    assert float(alone.success.float().mean()) >= 0.5
    start = lbfgs_attack(mlp, x, crit, search_steps=3)  # with an L-BFGS start: its successes, never larger
    res = minimal_l2_attack(mlp, x, crit, init=start.x_adv)
    assert torch.equal(predict_logits(mlp, res.x_adv).argmax(1)[res.success], crit.targets[res.success])
    assert bool(res.success[start.success].all())
    assert bool((res.l2[start.success] <= start.l2[start.success] * (1 + 1e-6)).all())


def test_bad_input_is_refused(mlp: torch.nn.Module, images: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = images
    crit = Misclassification(y)
    with pytest.raises(InputError, match="init"):
        minimal_l2_attack(mlp, x, crit, init=x[:3])
    with pytest.raises(InputError, match="adapt"):
        minimal_l2_attack(mlp, x, crit, adapt=0.5)
    with pytest.raises(InputError, match="damping"):
        minimal_l2_attack(mlp, x, crit, damping=0)
    with pytest.raises(InputError, match="lanes"):
        minimal_l2_attack(mlp, x, crit, lanes=0)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        minimal_l2_attack(mlp, x * 2, crit)
