"""The attack contract (criteria, eval mode, frozen parameters, fresh re-verification), input validation,
FGSM against its analytic form, minimal FGSM, noise and magnification, result.at, saving, and the CLI.
Real MNIST and real (small) trained models; no mocks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from blindspots.attacks import (AttackResult, Misclassification, TargetedMisclassification, attack_mode, fgsm,
                                fgsm_min_epsilon, gaussian_noise, lbfgs_attack, load_adversarial, magnify,
                                noise_attack, random_targets, save_adversarial)
from blindspots.cli import main
from blindspots.data import load_mnist
from blindspots.errors import BlindspotsError, InputError
from blindspots.models import train

from conftest import LINEAR

pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_mnist("test", subset=64)
    return d.images, d.labels


# ---- criteria --------------------------------------------------------------------------------------

def test_random_targets_seeded_and_never_the_label() -> None:
    y = load_mnist("test", subset=500).labels
    t1, t2, t3 = random_targets(y, seed=0), random_targets(y, seed=0), random_targets(y, seed=1)
    assert torch.equal(t1, t2) and not torch.equal(t1, t3)
    assert bool((t1 != y).all()) and int(t1.min()) >= 0 and int(t1.max()) <= 9
    assert set((t1 - y).remainder(10).tolist()) == set(range(1, 10))  # every other class is drawn


def test_criteria_judge_logits() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    assert Misclassification(torch.tensor([0, 0])).is_adversarial(logits).tolist() == [False, True]
    assert TargetedMisclassification(torch.tensor([1, 1])).is_adversarial(logits).tolist() == [False, True]
    stacked = torch.stack([logits, logits.flip(1)])  # [K, N, C]
    assert Misclassification(torch.tensor([0, 0])).is_adversarial(stacked).shape == (2, 2)


# ---- the contract ------------------------------------------------------------------------------------

def test_attack_mode_restores_mode_and_flags_even_on_error(mlp: torch.nn.Module) -> None:
    mlp.train()
    flags = [p.requires_grad for p in mlp.parameters()]
    with pytest.raises(RuntimeError, match="boom"):
        with attack_mode(mlp):
            assert not mlp.training and not any(p.requires_grad for p in mlp.parameters())
            raise RuntimeError("boom")
    assert mlp.training and [p.requires_grad for p in mlp.parameters()] == flags
    mlp.eval()


@pytest.mark.parametrize("attack", ["lbfgs", "fgsm", "fgsm_min", "noise"])
def test_contract_mode_grads_and_fresh_verification(mlp: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor],
                                                    attack: str) -> None:
    x, y = data[0][:10], data[1][:10]
    crit = TargetedMisclassification(random_targets(y, seed=3), y) if attack == "lbfgs" else Misclassification(y)
    for p in mlp.parameters():
        p.requires_grad_(True)
        p.grad = None
    mlp.train()
    try:
        if attack == "lbfgs":
            res = lbfgs_attack(mlp, x, crit, search_steps=4)
        elif attack == "fgsm":
            res = fgsm(mlp, x, crit, [0.05, 0.2])
        elif attack == "fgsm_min":
            res = fgsm_min_epsilon(mlp, x, crit)
        else:
            res = noise_attack(mlp, x, crit, [0.1, 0.5], seed=0)
        assert mlp.training, "the model's mode must be restored"
        assert all(p.requires_grad and p.grad is None for p in mlp.parameters()), "no gradient may reach the weights"
    finally:
        mlp.eval()
    with torch.no_grad():
        logits = mlp(res.x_adv.reshape(-1, *x.shape[1:])).reshape(*res.success.shape, 10)
    expected = logits.argmax(-1) == crit.targets if crit.targets is not None else logits.argmax(-1) != y
    assert torch.equal(res.success, expected)  # success recomputed here from the logits
    assert torch.equal(res.pred, logits.argmax(-1))
    assert torch.allclose(res.confidence, logits.softmax(-1).amax(-1), atol=1e-6)
    r = (res.x_adv - x).flatten(start_dim=res.x_adv.dim() - 3)
    assert torch.allclose(res.rms, r.square().mean(-1).sqrt(), atol=1e-6)
    assert torch.allclose(res.l2, r.norm(dim=-1), atol=1e-5)
    assert torch.allclose(res.linf, r.abs().amax(-1))
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert res.wall_time > 0 and res.attack and isinstance(res.params, dict)
    assert res.targets.shape == y.shape and res.labels.shape == y.shape


def test_input_validation_names_the_fix(mlp: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data[0][:4], data[1][:4]
    crit = Misclassification(y)
    cases = [
        ((x * 255).to(torch.uint8), crit, "floating point"),
        (x.clone().index_fill_(0, torch.tensor([1]), math.nan), crit, "NaN"),
        (x * 2, crit, r"\[0, 1\]"),
        (x[:0], Misclassification(y[:0]), "empty"),
        (x.view(4, 784)[:, :700], crit, "rejects images of shape"),
        (x, Misclassification(torch.tensor([0, 1, 2, 10])), "0..9"),
        (x, Misclassification(y[:3]), "3 labels for 4 images"),
        (x, TargetedMisclassification(y, y), "equal the true label"),
        (x, TargetedMisclassification(torch.tensor([-1, 0, 0, 0])), "0..9"),
    ]
    for images, criterion, message in cases:
        for run in (lambda: fgsm(mlp, images, criterion, [0.1]),
                    lambda: lbfgs_attack(mlp, images, criterion, search_steps=1, bracket_steps=0, max_iter=1)):
            with pytest.raises(InputError, match=message):
                run()
    with pytest.raises(InputError, match="integer"):
        Misclassification(torch.zeros(4))
    with pytest.raises(InputError, match="epsilons"):
        fgsm(mlp, x, crit, [])
    with pytest.raises(InputError, match="backend"):
        lbfgs_attack(mlp, x, crit, backend="numpy")
    with pytest.raises(InputError, match="fixed-budget"):
        fgsm(mlp, x, crit, [0.1]).at([0.1])


# ---- FGSM -------------------------------------------------------------------------------------------

def test_fgsm_equals_analytic_sign_on_softmax_regression(linear: torch.nn.Module,
                                                         data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    lin = next(m for m in linear.modules() if isinstance(m, torch.nn.Linear))
    W, b = lin.weight.detach().double(), lin.bias.detach().double()
    flat = x.flatten(1).double()
    p = (flat @ W.T + b).softmax(1)
    eps = [0.1, 0.25]
    for crit, onehot, sign in ((Misclassification(y), F.one_hot(y, 10), 1.0),
                               (TargetedMisclassification(random_targets(y, seed=0), y),
                                F.one_hot(random_targets(y, seed=0), 10), -1.0)):
        grad = (p - onehot.double()) @ W  # ∇ₓ CE = Wᵀ(p − e), analytically
        res = fgsm(linear, x, crit, eps)
        assert res.x_adv.shape == (2, *x.shape) and res.success.shape == (2, len(y)) and res.budgets == tuple(eps)
        # pixels whose weights decayed to ~0 (never lit in training) have |∇| ~ 1e-8, where float32
        # round-off decides the sign; everywhere else the step must be exactly ε·sign(∇)
        clear = grad.abs() > 1e-6
        assert float(clear.float().mean()) > 0.5
        for k, e in enumerate(eps):
            expected = (flat + sign * e * grad.sign()).clamp(0, 1).float()
            got = res.x_adv[k].flatten(1)
            assert torch.allclose(got[clear], expected[clear], atol=1e-6)
            assert bool(((got - flat.float()).abs() <= e + 1e-6).all())
        assert float(res.linf.max()) <= max(eps) + 1e-6


def test_fgsm_metrics_are_goodfellows(linear: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    res = fgsm(linear, x, Misclassification(y), [0.0, 0.25])
    wrong = res.pred != y
    assert torch.allclose(res.error_rate(), wrong.float().mean(1))
    assert torch.allclose(res.mean_wrong_confidence(),
                          torch.stack([res.confidence[k][wrong[k]].mean() for k in range(2)]))
    with torch.no_grad():
        clean_wrong = linear(x).argmax(1) != y
    assert torch.equal(res.success[0], clean_wrong)  # ε = 0 is the clean error, counted as is
    assert float(res.error_rate()[1]) > float(res.error_rate()[0])
    s = res.summary()
    assert s["budgets"] == [0.0, 0.25] and len(s["error_rate"]) == 2


def test_fgsm_min_epsilon_is_a_bisection_boundary(linear: torch.nn.Module,
                                                  data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    crit = Misclassification(y)
    res = fgsm_min_epsilon(linear, x, crit, eps_max=0.5, steps=12)
    eps = res.extras["epsilon"]
    found = torch.isfinite(eps)
    assert torch.equal(res.success, found)
    tol = 0.5 / 2 ** 12
    flipped = found & (eps > tol)
    assert int(flipped.sum()) >= 10
    for i in flipped.nonzero().flatten()[:16].tolist():  # succeeds at ε, fails one bisection step below
        e = float(eps[i])
        at = fgsm(linear, x[i:i + 1], crit.subset(slice(i, i + 1)), [e, e - tol])
        assert at.success[:, 0].tolist() == [True, False]
    curve = (res.success & res.within([0.05, 0.1, 0.25, 0.5], norm="linf")).float().mean(1)
    assert bool((curve[1:] >= curve[:-1]).all())


# ---- minimal results: at ------------------------------------------------------------------------------

def test_at_projects_and_rechecks(mlp: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data[0][:12], data[1][:12]
    res = lbfgs_attack(mlp, x, Misclassification(y), search_steps=4)
    budgets = [0.0, 0.01, 0.02, 0.04, 0.08, 1.0]
    for norm, size in (("rms", lambda r: r.square().mean(-1).sqrt()), ("l2", lambda r: r.norm(dim=-1)),
                       ("linf", lambda r: r.abs().amax(-1))):
        x_clip, ok = res.at(budgets, norm=norm)
        assert x_clip.shape == (len(budgets), *x.shape) and ok.shape == (len(budgets), 12)
        with torch.no_grad():  # success recomputed here from the logits, not by the code under test
            expected = mlp(x_clip.reshape(-1, *x.shape[1:])).argmax(-1).view(len(budgets), 12) != y
        assert torch.equal(ok, expected)
        sizes = size((x_clip - x).flatten(2))
        for k, b in enumerate(budgets):
            assert bool((sizes[k] <= b * (1 + 1e-5) + 1e-7).all()), (norm, b)
            within = res.measure(norm) <= b
            assert torch.equal(x_clip[k][within], res.x_adv[within])  # within budget: kept exactly
            assert not bool((res.success & within & ~ok[k]).any())  # and still a success
        assert float(x_clip.min()) >= 0 and float(x_clip.max()) <= 1
        assert torch.equal(x_clip[0], x) and torch.equal(ok[0], res.clean_error)  # budget 0: the clean images
    assert not hasattr(res, "clip_to")  # superseded by at(): one name, one meaning
    with pytest.raises(InputError, match="norm"):
        res.at([0.1], norm="l1")


# ---- noise and magnification -------------------------------------------------------------------------

def test_gaussian_noise_seeded_clipped_and_per_sample(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x = data[0][:8]
    a, b, c = gaussian_noise(x, 0.1, seed=0), gaussian_noise(x, 0.1, seed=0), gaussian_noise(x, 0.1, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    mid = torch.full_like(x, 0.5)
    rms = (gaussian_noise(mid, 0.05, seed=0) - mid).flatten(1).square().mean(1).sqrt()
    assert torch.allclose(rms, torch.full_like(rms, 0.05), rtol=0.08)
    sig = torch.linspace(0, 0.1, 8)
    rms = (gaussian_noise(mid, sig, seed=0) - mid).flatten(1).square().mean(1).sqrt()
    assert float(rms[0]) == 0 and torch.allclose(rms[1:], sig[1:], rtol=0.1)


def test_magnify_sets_per_pixel_std_not_l2(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x = 0.25 + 0.5 * data[0][:6]
    r = gaussian_noise(torch.full_like(x, 0.5), 0.01, seed=4) - 0.5
    x_adv = (x + r).clamp(0, 1)
    out = magnify(x, x_adv, 0.05)  # 5σ from the box: no clipping
    rms = (out - x).flatten(1).square().mean(1).sqrt()
    assert torch.allclose(rms, torch.full_like(rms, 0.05), rtol=1e-4)  # stddev 0.05, not ‖·‖₂ = 0.05
    cos = F.cosine_similarity((out - x).flatten(1), (x_adv - x).flatten(1))
    assert bool((cos > 0.9999).all())
    assert torch.equal(magnify(x, x, 0.1), x)  # no perturbation: nothing to magnify
    big = magnify(data[0][:6], (data[0][:6] + r).clamp(0, 1), 0.5)
    assert float(big.min()) >= 0 and float(big.max()) <= 1


# ---- artefacts ---------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path: Path, linear: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data[0][:8], data[1][:8]
    for res in (fgsm(linear, x, Misclassification(y), [0.1, 0.3]),
                lbfgs_attack(linear, x, TargetedMisclassification(random_targets(y, 0), y), search_steps=3)):
        path = save_adversarial(tmp_path / f"{res.attack}.safetensors", res)
        t = load_adversarial(path)
        ref = res.to_tensors()
        assert set(ref) == set(t)
        for key in ("x", "x_adv", "label", "target", "success", "distortion", "pred"):
            assert torch.equal(t[key], ref[key]), key
        assert ("budgets" in t) == res.is_fixed_budget
        assert (t["target"] == -1).all() == (res.targets == -1).all()
        with torch.no_grad():
            pred = linear(t["x_adv"].reshape(-1, *x.shape[1:])).argmax(-1).view(t["success"].shape)
        assert torch.equal(pred != t["label"] if res.is_fixed_budget else pred == t["target"], t["success"])
    with pytest.raises(BlindspotsError, match="no adversarial set"):
        load_adversarial(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(BlindspotsError, match="not a readable"):
        load_adversarial(tmp_path / "junk.safetensors")


def test_cli_end_to_end(tmp_path: Path, linear: torch.nn.Module, capsys: pytest.CaptureFixture[str]) -> None:
    model_args = [LINEAR["spec"], "--train-subset", str(LINEAR["train_subset"])]
    out = tmp_path / "lbfgs"
    assert main(["attack", *model_args, "--method", "lbfgs", "--n", "6", "--target", "random", "--seed", "3",
                 "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("success_rate", "mean_distortion", "median_distortion", "error_rate", "mean_wrong_confidence",
                "wall_time_s", "params", "seed"):
        assert key in summary, key
    meta = train(LINEAR["spec"], train_subset=LINEAR["train_subset"], progress=False).meta
    assert summary["model"]["weights_sha256"] == meta["weights_sha256"] and summary["seed"] == 3
    t = load_adversarial(out / "adversarial.safetensors")
    assert t["x"].shape == (6, 1, 28, 28) and bool((t["target"] != t["label"]).all())
    with torch.no_grad():
        assert torch.equal(linear(t["x_adv"]).argmax(1) == t["target"], t["success"])
    assert summary["success_rate"] == pytest.approx(float(t["success"].float().mean()))
    assert (out / "examples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert "success" in capsys.readouterr().out
    fg = tmp_path / "fgsm"
    assert main(["attack", *model_args, "--method", "fgsm", "--eps", "0.1", "0.25", "--n", "20", "--out", str(fg),
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["budgets"] == [0.1, 0.25] and len(printed["error_rate"]) == 2
    t = load_adversarial(fg / "adversarial.safetensors")
    assert t["x_adv"].shape == (2, 20, 1, 28, 28) and t["budgets"].tolist() == [0.1, 0.25]
    assert bool((t["target"] == -1).all())

    assert main(["attack", *model_args, "--method", "noise", "--sigma", "0.3", "--n", "5",
                 "--out", str(tmp_path / "noise"), "--no-progress"]) == 0
    assert main(["attack", *model_args, "--method", "fgsm", "--target", "all", "--n", "5",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--target all" in capsys.readouterr().err


def test_result_is_a_plain_dataclass(linear: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    res = fgsm(linear, data[0][:4], Misclassification(data[1][:4]), [0.2])
    assert isinstance(res, AttackResult)
    assert res.success_rate.shape == (1,) and 0 <= float(res.success_rate[0]) <= 1
