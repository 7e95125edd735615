"""Adversarial training and its noise controls (training.adversarial), the RBF net's pieces, the 3-vs-7
logistic regression, and the analytic FGSM perturbation of linear models. All fast."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from blindspots.attacks import Misclassification, fgsm
from blindspots.errors import SpecError
from blindspots.experiments.goodfellow2015 import fit_logreg, logreg_data
from blindspots.models import load_model, train
from blindspots.training.adversarial import Objective
from blindspots.models.zoo import BinaryLogistic, RBFLayer, TwoClassLogits, one_vs_rest_nll

EPS = 0.25


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


def test_fgsm_objective_gradient_equals_the_naive_one() -> None:
    """The one-backward trick gives the parameter gradient of α·J(x) + (1−α)·J(x + ε·sign ∇ₓJ)."""
    torch.manual_seed(1)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    obj = Objective("fgsm", EPS, 0.5)
    net = _tiny_net()
    net.zero_grad()
    obj.loss(net, x, y, F.cross_entropy, torch.Generator()).backward()
    fast = [p.grad.clone() for p in net.parameters()]

    net.zero_grad()
    xg = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(F.cross_entropy(net(xg), y), xg)
    x_adv = (x + EPS * gx.sign()).clamp(0, 1)
    (0.5 * F.cross_entropy(net(x), y) + 0.5 * F.cross_entropy(net(x_adv), y)).backward()
    for a, b in zip(fast, [p.grad for p in net.parameters()]):
        torch.testing.assert_close(a, b)


def test_fgsm_objective_perturbation_matches_the_attack_library() -> None:
    """In eval mode the training perturbation is the library's FGSM image (an independent check)."""
    torch.manual_seed(2)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    net = _tiny_net().eval()
    seen: list[torch.Tensor] = []
    hook = net[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    Objective("fgsm", EPS, 0.5).loss(net, x, y, F.cross_entropy, torch.Generator())
    hook.remove()
    library = fgsm(net, x, Misclassification(y), [EPS]).x_adv[0]
    torch.testing.assert_close(seen[1], library, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["sign_noise", "uniform_noise"])
def test_noise_controls_draw_noise_of_size_epsilon(kind: str) -> None:
    obj = Objective(kind, EPS, 0.5)
    x = torch.full((200, 1, 28, 28), 0.5)
    delta = obj.noise(x, torch.Generator().manual_seed(0))
    assert float(delta.abs().max()) <= EPS + 1e-7
    if kind == "sign_noise":
        assert torch.all(delta.abs() == EPS)
        assert abs(float((delta > 0).float().mean()) - 0.5) < 0.01
    else:
        assert float(delta.abs().mean()) == pytest.approx(EPS / 2, rel=0.02)
    again = obj.noise(x, torch.Generator().manual_seed(0))
    assert torch.equal(delta, again)


def test_objective_rejects_bad_values() -> None:
    for bad in (dict(perturbation="pgd"), dict(epsilon=-0.1), dict(epsilon=2.0), dict(alpha=1.0)):
        with pytest.raises(SpecError):
            Objective(**bad)  # type: ignore[arg-type]
    assert "." not in Objective("fgsm", 0.25, 0.5).slug


def test_store_keeps_adversarially_trained_models_apart(model_store: Path) -> None:
    obj = Objective("fgsm", EPS, 0.5)
    kw = dict(epochs=1, train_subset=300, progress=False, store=model_store)
    plain = train("MAXOUT", **kw)
    adv = train("MAXOUT", objective=obj, **kw)
    assert plain.path != adv.path and obj.slug in adv.path.name
    assert adv.meta["objective"]["perturbation"] == "fgsm" and plain.meta["objective"] is None
    again = load_model("MAXOUT", objective=obj, epochs=1, train_subset=300, store=model_store)
    assert again.meta["weights_sha256"] == adv.meta["weights_sha256"]
    assert plain.meta["weights_sha256"] != adv.meta["weights_sha256"]


def test_rbf_layer_and_its_likelihood_match_the_naive_formulas() -> None:
    torch.manual_seed(3)
    layer = RBFLayer(784, 10)
    with torch.no_grad():
        layer.centers.uniform_(0, 1)
        layer.log_beta.uniform_(-6, -2)
    x = torch.rand(5, 784)
    naive = -((x.unsqueeze(1) - layer.centers).square() * layer.log_beta.exp()).sum(-1)
    torch.testing.assert_close(layer(x), naive, rtol=1e-4, atol=1e-4)
    y = torch.randint(0, 10, (5,))
    p = naive.exp()
    on = F.one_hot(y, 10).float()
    expected = -(on * p.log() + (1 - on) * (1 - p).log()).sum(-1).mean()
    torch.testing.assert_close(one_vs_rest_nll(naive, y), expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def logreg() -> tuple[BinaryLogistic, torch.Tensor, torch.Tensor]:
    x, y, _ = logreg_data("train")
    keep = torch.arange(0, y.numel(), 4)  # a quarter of the 3s and 7s: fast, still a good model
    model = fit_logreg(x[keep], y[keep])
    xt, yt, _ = logreg_data("test")
    return model, xt[:400], yt[:400]


def test_logreg_fgsm_is_minus_eps_y_sign_w(logreg: tuple[BinaryLogistic, torch.Tensor, torch.Tensor]) -> None:
    """For one logit z = w·x + b and y in {−1, +1}, FGSM moves every pixel by −ε·y·sign(w) (then clips)."""
    model, x, y01 = logreg
    with torch.no_grad():
        assert float(((model(x) > 0).long() != y01).float().mean()) < 0.05
    result = fgsm(TwoClassLogits(model), x, Misclassification(y01), [EPS])
    y_pm = (2 * y01 - 1).float().view(-1, 1, 1, 1)
    sign_w = model.linear.weight.detach().sign().view(1, 1, 28, 28)
    expected = (x - EPS * y_pm * sign_w).clamp(0, 1)
    moved = result.linf[0] > 0  # images whose loss saturated in float32 have a zero gradient
    assert float(moved.float().mean()) > 0.9
    torch.testing.assert_close(result.x_adv[0][moved], expected[moved], rtol=0, atol=0)
    assert float(result.error_rate()[0]) > 0.9


def test_two_class_softmax_fgsm_is_eps_sign_w_other_minus_w_true() -> None:
    torch.manual_seed(4)
    lin = nn.Linear(784, 2)
    net = nn.Sequential(nn.Flatten(), lin)
    x, y = torch.rand(50, 1, 28, 28), torch.randint(0, 2, (50,))
    result = fgsm(net, x, Misclassification(y), [EPS])
    w = lin.weight.detach()
    direction = (w[1 - y] - w[y]).sign().view(-1, 1, 28, 28)
    torch.testing.assert_close(result.x_adv[0], (x + EPS * direction).clamp(0, 1), rtol=0, atol=0)


def _small(n: int = 400):
    from blindspots.data import load_mnist

    return load_mnist("train", subset=n)


def test_killed_training_resumes_bit_for_bit() -> None:
    """fit(..., on_state) hands out the run's state; fit(..., resume=state) continues it to the same weights."""
    from blindspots.experiments.goodfellow2015 import protocol_recipe
    from blindspots.models import fit

    data, recipe = _small(), protocol_recipe("MAXOUT", 3)
    saved: dict[int, dict[str, torch.Tensor]] = {}
    full, _ = fit("MAXOUT", data, seed=1, recipe=recipe, objective=Objective(), progress=False,
                  on_state=lambda e, s: saved.__setitem__(e, s))
    assert sorted(saved) == [1, 2, 3] and int(saved[2]["epoch"][0]) == 2
    resumed, _ = fit("MAXOUT", data, seed=1, recipe=recipe, objective=Objective(), progress=False, resume=saved[2])
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    fresh, _ = fit("MAXOUT", data, seed=2, recipe=recipe, objective=Objective(), progress=False)
    assert not torch.equal(fresh.out.weight, full.out.weight)


def test_original_maxout_recipe_schedules_and_update() -> None:
    """pylearn2's recipe: lr 0.1 ÷ 1.000004 per minibatch (floor 1e-6), momentum 0.5 → 0.7 over epochs 1–250
    (0.694 at epoch 243, as the continued config records), the update inc = m·inc − lr·g, U(±0.005) init and
    biases 0, max column norm 1.9365 on every layer, input dropout unscaled; a continuation at `offset` runs the
    same schedules as the uninterrupted run."""
    from blindspots.experiments.goodfellow2015 import protocol_recipe
    from blindspots.models import build_model, fit
    from blindspots.models.train import MomentumSGD, batch_lr, epoch_momentum

    r = protocol_recipe("MAXOUT", 3)
    assert batch_lr(r, 0) == 0.1 and batch_lr(r, 243 * 500) == pytest.approx(0.0615, abs=5e-4)
    assert batch_lr(r, 10**9) == 1e-6
    assert epoch_momentum(r, 1) == 0.5 and epoch_momentum(r, 243) == pytest.approx(0.694, abs=1e-3)
    assert epoch_momentum(r, 250) == epoch_momentum(r, 900) == pytest.approx(0.7)
    p = torch.nn.Parameter(torch.zeros(2))
    opt = MomentumSGD([p], lr=0.5, momentum=0.5)
    for g in (torch.tensor([1.0, -2.0]), torch.tensor([1.0, 0.0])):
        p.grad = g
        opt.step()
    assert torch.allclose(p.detach(), torch.tensor([-0.5 - 0.75, 1.0 + 0.5]))  # inc: (-0.5, 1) then (-0.75, 0.5)
    data = _small(300)
    model, _ = fit("MAXOUT", data, seed=0, recipe=protocol_recipe("MAXOUT", 2), progress=False)
    for layer in (model.maxout1.linear, model.maxout2.linear, model.out):
        assert float(layer.weight.norm(dim=1).max()) <= 1.9365 + 1e-5
    assert model.drop0.scale == 1.0 and model.drop1.scale is None  # unscaled input dropout, inverted hidden
    torch.manual_seed(0)
    fresh = build_model("MAXOUT")
    assert float(fresh.out.weight.abs().max()) > 0.005  # torch's default init, unlike the recipe's
    # a continuation from these weights at offset (2 epochs, 6 minibatches) starts from them, not afresh
    init = {k: v.clone() for k, v in model.state_dict().items()}
    lrs: list[float] = []
    cont, _ = fit("MAXOUT", data, seed=0, recipe=protocol_recipe("MAXOUT", 1), progress=False, init=init,
                  offset=(2, 6), on_epoch=lambda e, m: lrs.append(e))
    assert lrs == [1] and not torch.equal(cont.out.weight, init["out.weight"])
    assert float((cont.out.weight - init["out.weight"]).abs().max()) < 0.5  # moved on from them


def test_a_continuation_freezes_the_momentum_at_the_offset_epochs_value() -> None:
    """pylearn2's mnist_pi_continued.yaml starts a fresh Momentum rule at the value the first run had reached (no
    MomentumAdjustor): a continuation at epoch 10 with `freeze_momentum` trains exactly as a recipe whose momentum
    is constant at epoch_momentum(recipe, 10); without it the momentum keeps rising, and the weights differ."""
    from dataclasses import replace

    from blindspots.experiments.goodfellow2015 import protocol_recipe
    from blindspots.models import fit
    from blindspots.models.train import epoch_momentum

    data = _small(200)
    recipe = protocol_recipe("MAXOUT", 2)
    start, _ = fit("MAXOUT", data, seed=0, recipe=protocol_recipe("MAXOUT", 1), progress=False)
    init = {k: v.clone() for k, v in start.state_dict().items()}
    offset = (10, 20)

    def cont(r, freeze: bool):  # type: ignore[no-untyped-def]
        return fit("MAXOUT", data, seed=3, recipe=r, progress=False, init=init, offset=offset,
                   freeze_momentum=freeze)[0].out.weight

    frozen = cont(recipe, True)
    constant = cont(replace(recipe, momentum=epoch_momentum(recipe, 10), momentum_final=None), False)
    ramped = cont(recipe, False)
    assert epoch_momentum(recipe, 10) < epoch_momentum(recipe, 12)
    assert torch.equal(frozen, constant)
    assert not torch.equal(frozen, ramped)


def test_clean_gradient_mode_takes_the_gradient_without_dropout() -> None:
    """gradient="clean": δ = ε·sign(∇ₓJ) of the eval-mode net, whatever dropout does in training mode."""
    from blindspots.models import build_model

    torch.manual_seed(5)
    net = build_model("MAXOUT").train()
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    seen: list[torch.Tensor] = []
    handle = net.flatten.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    Objective("fgsm", EPS, 0.5, gradient="clean").loss(net, x, y, F.cross_entropy, torch.Generator())
    handle.remove()
    assert net.training  # mode restored
    expected = fgsm(net, x, Misclassification(y), [EPS]).x_adv[0]
    torch.testing.assert_close(seen[-1][6:], expected, rtol=0, atol=0)
    assert Objective(gradient="clean").slug.endswith("-gclean") and "gradient" not in Objective().as_dict()
    with pytest.raises(SpecError):
        Objective(gradient="noisy")


def test_maxout_width_spec() -> None:
    from blindspots.models import build_model, parse_spec

    assert parse_spec("MAXOUT").name == "MAXOUT" and parse_spec("maxout240").name == "MAXOUT"
    wide = parse_spec("MAXOUT1600(1e-4)")
    assert wide.name == "MAXOUT1600(1e-4)" and parse_spec(wide.name) == wide
    assert build_model("MAXOUT32").maxout2.linear.weight.shape == (32 * 5, 32)
    with pytest.raises(SpecError, match="MAXOUT1600"):
        parse_spec("MAXOUT0")


def test_protocol_phase_killed_mid_training_resumes(tmp_path: Path) -> None:
    """A Phase killed after its epoch-2 checkpoint resumes from it: same curve, same weights as a run never killed;
    early stopping stops `patience` epochs after the best validation epoch."""
    from blindspots.experiments.goodfellow2015 import protocol_recipe
    from blindspots.experiments.goodfellow2015.training import Phase, Probe

    data = _small(300)
    boom = {"armed": True}

    def metric(model: nn.Module, epoch: int) -> float:
        if epoch == 3 and boom["armed"]:
            raise KeyboardInterrupt  # the run is killed during epoch 3's measurements
        return float(model.out.weight.detach().abs().sum())

    def phase(work: Path) -> Phase:
        return Phase("MAXOUT", data, protocol_recipe("MAXOUT", 4), Objective(), 0, 4, Probe({"v": metric}), work, 2)

    killed = phase(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        killed.run("cpu", False)
    assert (tmp_path / "a" / "state.safetensors").exists()
    boom["armed"] = False
    resumed = phase(tmp_path / "a")
    model = resumed.run("cpu", False)
    straight = phase(tmp_path / "b")
    reference = straight.run("cpu", False)
    assert resumed.curve["epoch"] == [1, 2, 3, 4] and resumed.curve["v"] == straight.curve["v"]
    assert torch.equal(model.out.weight, reference.out.weight)
    assert not (tmp_path / "a").exists()  # a finished phase leaves no state behind

    rising = Phase("MAXOUT", data, protocol_recipe("MAXOUT", 9), None, 0, 9,
                   Probe({"valid_error": lambda model, epoch: [0.5, 0.3, 0.4, 0.3, 0.35, 0.2, 0.1][epoch - 1]}),
                   tmp_path / "c", 5, "valid_error", 2)
    rising.run("cpu", False)
    assert rising.best_epoch() == 2 and rising.curve["epoch"] == [1, 2, 3, 4]  # no improvement at 3 and 4


def test_l1_first_layer_decay_shrinks_only_the_first_layer_and_keeps_old_recipe_names() -> None:
    """Recipe.l1_first adds c·Σ|W| over the first layer's weights: a strong coefficient shrinks that layer's L1
    norm against the same run without it; at its default the recipe's dict (so checkpoint names) is unchanged."""
    from blindspots.models import fit
    from blindspots.models.train import first_layer_weight, original_maxout_recipe, recipe_dict

    r = original_maxout_recipe(1)
    assert "l1_first" not in recipe_dict(r) and recipe_dict(replace(r, l1_first=0.0025))["l1_first"] == 0.0025
    data = _small(300)
    plain, _ = fit("MAXOUT32", data, seed=0, recipe=r, progress=False)
    decayed, _ = fit("MAXOUT32", data, seed=0, recipe=replace(r, l1_first=0.0025), progress=False)
    assert first_layer_weight(decayed) is decayed.maxout1.linear.weight
    shrink = float(decayed.maxout1.linear.weight.abs().sum()) / float(plain.maxout1.linear.weight.abs().sum())
    assert shrink < 0.9, shrink
    # the layers above are not decayed: their weights stay within 20% of the plain run's in L1 norm
    later = float(decayed.maxout2.linear.weight.abs().sum()) / float(plain.maxout2.linear.weight.abs().sum())
    assert 0.8 < later < 1.2, later


def test_ensemble_is_the_log_of_the_mean_softmax_and_attacks_work_on_it() -> None:
    from blindspots.models import Ensemble

    torch.manual_seed(3)
    members = [nn.Sequential(nn.Flatten(), nn.Linear(784, 10)) for _ in range(3)]
    ens = Ensemble(members).eval()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    with torch.no_grad():
        mean = torch.stack([m(x).softmax(-1) for m in members]).mean(0)
        torch.testing.assert_close(ens(x), mean.log())
        torch.testing.assert_close(ens(x).softmax(-1), mean)
    res = fgsm(ens, x, Misclassification(y), [EPS])
    assert float((res.x_adv[0] - x).abs().max()) <= EPS + 1e-6
    with pytest.raises(ValueError):
        Ensemble([])
