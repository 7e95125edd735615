"""PGD, DeepFool and C&W-L2 against known answers on linear models (real MNIST, real trained softmax
regression), the registry, and the contract for every registered attack. Success is recomputed here from
the model's logits, never with the code under test."""

from __future__ import annotations

import math

import pytest
import torch
from test_attacks_lbfgs import _closed_form_cases

pytestmark = pytest.mark.usefixtures("one_thread")
from torch import nn

from blindspots.attacks import (ATTACKS, Misclassification, TargetedMisclassification, cw_l2, deepfool, get_attack,
                                pgd, random_targets, run_attack, verify)
from blindspots.data import load_mnist
from blindspots.errors import InputError

BUDGETS = {"fgsm": [0.1, 0.2], "pgd": [0.1, 0.2], "apgd": [0.1, 0.2], "square": [0.1, 0.2], "noise": [0.1, 0.3]}
QUICK = {"lbfgs": {"search_steps": 2}, "lbfgs-all-targets": {"search_steps": 2}, "cw": {"steps": 20, "search_steps": 1},
         "pgd": {"steps": 5}, "apgd": {"steps": 5}, "hopskipjump": {"steps": 5, "max_queries": 500}}


def _wrong(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x.reshape(-1, *x.shape[-3:])).argmax(-1).view(*x.shape[:-3]) != y


def _binary(linear: nn.Module, a: int = 3, b: int = 7) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Logistic regression a vs b: rows a and b of the trained softmax regression, on test images of a and b."""
    lin = next(m for m in linear.modules() if isinstance(m, nn.Linear))
    two = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    with torch.no_grad():
        two[1].weight.copy_(lin.weight[[a, b]])
        two[1].bias.copy_(lin.bias[[a, b]])
    d = load_mnist("test", subset=400)
    keep = (d.labels == a) | (d.labels == b)
    return two, d.images[keep][:48], (d.labels[keep][:48] == b).long()


def test_pgd_linf_reaches_the_analytic_worst_case(linear: nn.Module) -> None:
    """Madry et al.: for a linear margin the L∞ worst case in the ε-ball ∩ box is the vertex
    δ_i = clip(−ε·sign(w_i), −x_i, 1 − x_i); PGD's sign steps (2.5ε of travel) must land on it, with the
    default loss and with the margin."""
    model, x, y = _binary(linear)
    W = model[1].weight.detach().double()
    flat = x.flatten(1).double()
    w = W[y] - W[1 - y]  # margin z_y − z_other = w·x + const, to be driven below 0
    for eps in (0.05, 0.2):
        delta = torch.minimum(torch.maximum(-eps * w.sign(), -flat), 1 - flat)
        worst = ((flat + delta) * w).sum(1) + (model[1].bias.double()[y] - model[1].bias.double()[1 - y])
        res = pgd(model, x, Misclassification(y), [eps], steps=40)
        clear = w.abs() > 1e-6  # float32 decides the sign of the ~0 weights of never-lit pixels
        for r in (res, pgd(model, x, Misclassification(y), [eps], steps=40, loss="margin")):
            got = r.x_adv[0].flatten(1).double()
            assert torch.allclose(got[clear], (flat + delta)[clear], atol=1e-5)
        sure = worst.abs() > 1e-3
        assert torch.equal(_wrong(model, res.x_adv[0], y)[sure], (worst < 0)[sure])
        assert torch.equal(res.success[0], _wrong(model, res.x_adv[0], y))
        assert float(res.linf.max()) <= eps + 1e-6


def test_pgd_l2_reaches_the_analytic_worst_case(linear: nn.Module) -> None:
    model, x, y = _binary(linear)
    x = 0.25 + 0.5 * x  # away from the box
    W = model[1].weight.detach().double()
    w = W[y] - W[1 - y]
    eps = 0.5
    target = x.flatten(1).double() - eps * w / w.norm(dim=1, keepdim=True)
    inside = ((target >= 0) & (target <= 1)).all(1)
    assert int(inside.sum()) >= 10
    res = pgd(model, x, Misclassification(y), [eps], norm="l2", steps=40, random_start=False, loss="margin")
    assert torch.allclose(res.x_adv[0].flatten(1).double()[inside], target[inside], atol=1e-4)
    assert bool((res.l2 <= eps * (1 + 1e-5)).all())
    # restarts keep each image's most adversarial run: never worse than their first run alone (same draw)
    one = pgd(model, x, Misclassification(y), [eps], norm="l2", restarts=1, seed=1, schedule="cosine")
    rs = pgd(model, x, Misclassification(y), [eps], norm="l2", restarts=3, seed=1, schedule="cosine")
    assert bool((rs.l2 <= eps * (1 + 1e-5)).all())
    assert torch.equal(rs.success, _wrong(model, rs.x_adv, y))
    assert not bool((one.success & ~rs.success).any())


def test_pgd_seeded_and_targeted(mlp: nn.Module) -> None:
    d = load_mnist("test", subset=32)
    x, y = d.images, d.labels
    t = random_targets(y, seed=5)
    a = pgd(mlp, x, TargetedMisclassification(t, y), [0.3], steps=10, seed=3)
    b = pgd(mlp, x, TargetedMisclassification(t, y), [0.3], steps=10, seed=3)
    c = pgd(mlp, x, TargetedMisclassification(t, y), [0.3], steps=10, seed=4)
    assert torch.equal(a.x_adv, b.x_adv) and not torch.equal(a.x_adv, c.x_adv)
    with torch.no_grad():
        reached = mlp(a.x_adv[0]).argmax(1) == t
    assert torch.equal(a.success[0], reached) and bool(reached.any())


def test_deepfool_is_exact_on_a_linear_model(linear: nn.Module) -> None:
    """Moosavi-Dezfooli et al.: for an affine classifier one step reaches the nearest boundary, the exact
    minimal L2 perturbation min_k |f_k| / ‖w_k‖, times (1 + overshoot)."""
    x, y, nearest, exact = _closed_form_cases(linear)
    for overshoot in (0.0, 0.02):
        res = deepfool(linear, x, Misclassification(y), overshoot=overshoot)
        assert torch.equal(res.success, _wrong(linear, res.x_adv, y)) and bool(res.success.all())
        rel = res.rms.double() / exact
        assert float(rel.min()) > 1 - 1e-4
        assert float(rel.max()) < 1 + overshoot + 2e-3
        assert bool((res.extras["iterations"] == 1).all())
    with torch.no_grad():
        assert torch.equal(linear(res.x_adv).argmax(1), nearest)  # it crossed into the nearest class


def test_cw_l2_lands_on_the_closed_form(linear: nn.Module) -> None:
    """Carlini & Wagner: never below the exact minimal L2 distance, and at it for the typical image."""
    x, y, nearest, exact = _closed_form_cases(linear)
    for parametrisation in ("tanh", "projected"):
        res = cw_l2(linear, x, Misclassification(y), parametrisation=parametrisation)
        assert torch.equal(res.success, _wrong(linear, res.x_adv, y)) and bool(res.success.all())
        rel = res.rms.double() / exact
        assert float(rel.min()) > 1 - 1e-4, parametrisation
        assert float(rel.median()) < 1.01, parametrisation
    tgt = cw_l2(linear, x[:8], TargetedMisclassification(nearest[:8], y[:8]), parametrisation="projected")
    with torch.no_grad():
        assert torch.equal(tgt.success, linear(tgt.x_adv).argmax(1) == nearest[:8])
    assert float((tgt.rms.double() / exact[:8]).median()) < 1.01


def test_cw_and_lbfgs_share_the_c_search() -> None:
    from blindspots.attacks import cw, lbfgs
    from blindspots.attacks.csearch import CSearch

    assert cw.CSearch is CSearch and lbfgs.CSearch is CSearch


def test_registry_is_the_cli_and_api_dispatch(linear: nn.Module) -> None:
    from blindspots.cli import attack as cli_attack

    d = load_mnist("test", subset=8)
    assert set(ATTACKS) >= {"lbfgs", "fgsm", "pgd", "deepfool", "cw", "noise", "square"}
    assert cli_attack.ATTACKS is ATTACKS
    assert "pgd" in get_attack("pgd").name and get_attack("pgd").params["steps"] == 40
    with pytest.raises(InputError, match="unknown attack"):
        get_attack("nope")
    with pytest.raises(InputError, match="no parameter"):
        run_attack("deepfool", linear, d.images, Misclassification(d.labels), stepz=3)
    with pytest.raises(InputError, match="fixed-budget"):
        run_attack("pgd", linear, d.images, Misclassification(d.labels))
    with pytest.raises(InputError, match="minimal attack"):
        run_attack("deepfool", linear, d.images, Misclassification(d.labels), [0.1])


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_registered_attack_keeps_the_contract(mlp: nn.Module, name: str) -> None:
    d = load_mnist("test", subset=10)
    x, y = d.images, d.labels
    spec = get_attack(name)
    for p in mlp.parameters():
        p.requires_grad_(True)
        p.grad = None
    mlp.train()
    try:
        res = spec(mlp, x, Misclassification(y), BUDGETS.get(name), **QUICK.get(name, {}))
        assert mlp.training, "the model's mode must be restored"
        assert all(p.requires_grad and p.grad is None for p in mlp.parameters())
    finally:
        mlp.eval()
    assert res.is_fixed_budget == (not spec.minimal)
    assert torch.equal(res.success, _wrong(mlp, res.x_adv, y))  # fresh re-verification, recomputed here
    assert torch.equal(verify(mlp, res.x_adv, Misclassification(y), per_budget=res.is_fixed_budget), res.success)
    assert torch.equal(res.clean_error, _wrong(mlp, x, y))
    assert res.clean_error.shape == (10,) and res.success.shape[-1] == 10
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    s = res.summary()
    assert s["clean_errors"] == int(res.clean_error.sum())
    with pytest.raises(InputError):
        spec(mlp, x * 2, Misclassification(y), BUDGETS.get(name))  # bad input refused
    with pytest.raises(InputError, match="criterion"):
        spec(mlp, x, None, BUDGETS.get(name))  # type: ignore[arg-type]


def test_summary_leaves_clean_errors_out_of_distortion(mlp: nn.Module) -> None:
    d = load_mnist("test", subset=40)
    res = deepfool(mlp, d.images, Misclassification(d.labels))
    ok = res.success & ~res.clean_error
    assert bool(res.clean_error.any()), "the small test model must make some clean errors"
    s = res.summary()
    assert s["median_distortion"] == pytest.approx(float(res.rms[ok].double().median()))
    assert s["clean_errors"] == int(_wrong(mlp, d.images, d.labels).sum())
    assert not math.isnan(s["success_rate_attacked"])
