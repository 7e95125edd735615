"""The contract's edges (issues 11 and 13): bounds and the normalisation wrapper, plain functions and
float64 models as models, the class count read from the model, bad arguments refused with one clear line,
per-row L-BFGS history, the native kernel's verified cache, threadpoolctl, softmax outputs refused, the CLI, the one entry point."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import LINEAR
from torch import nn

from blindspots.attacks import (Misclassification, Normalized, TargetedMisclassification, deepfool, fgsm, lbfgs_attack,
                                pgd, random_targets)
from blindspots.attacks.boxlbfgs import _direction, store_pairs
from blindspots.cli import main
from blindspots.data import load_mnist
from blindspots.errors import InputError


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_mnist("test", subset=16)
    return d.images, d.labels


def _pred(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x.reshape(-1, *x.shape[-3:])).argmax(-1).view(x.shape[:-3])


def test_bad_arguments_get_one_clear_error(linear: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    with pytest.raises(InputError, match="criterion must be"):
        fgsm(linear, x, None, [0.1])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="gtol"):
        lbfgs_attack(linear, x, Misclassification(y), gtol=math.nan)
    with pytest.raises(InputError, match="ftol"):
        lbfgs_attack(linear, x, Misclassification(y), ftol=-1)
    with pytest.raises(InputError, match="model must be"):
        fgsm(42, x, Misclassification(y), [0.1])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="bounds"):
        pgd(linear, x, Misclassification(y), [0.1], bounds=(1, 0))
    with pytest.raises(InputError, match="norm"):
        pgd(linear, x, Misclassification(y), [0.1], norm="l1")


def test_a_plain_function_and_a_float64_model_work(linear: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    ref = fgsm(linear, x, Misclassification(y), [0.1])
    fn = fgsm(lambda t: linear(t), x, Misclassification(y), [0.1])
    assert torch.equal(fn.x_adv, ref.x_adv) and torch.equal(fn.success, ref.success)
    wide = copy.deepcopy(linear).double()
    for res in (fgsm(wide, x, Misclassification(y), [0.1]), deepfool(wide, x, Misclassification(y)),
                lbfgs_attack(wide, x, Misclassification(y), search_steps=2)):
        assert res.x_adv.dtype == torch.float64
        assert torch.equal(res.success, _pred(wide, res.x_adv) != y)
        r = (res.x_adv - x.double()).flatten(res.x_adv.dim() - 3)
        assert torch.allclose(res.l2, r.norm(dim=-1)) and torch.allclose(res.rms, r.square().mean(-1).sqrt())


def test_class_count_comes_from_the_model(linear: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    lin = next(m for m in linear.modules() if isinstance(m, nn.Linear))
    three = nn.Sequential(nn.Flatten(), nn.Linear(784, 3))
    with torch.no_grad():
        three[1].weight.copy_(lin.weight[:3])
        three[1].bias.copy_(lin.bias[:3])
    y3 = y.remainder(3)
    res = deepfool(three, x, Misclassification(y3))
    assert torch.equal(res.success, _pred(three, res.x_adv) != y3)
    t = random_targets(y3, seed=0, n_classes=3)
    assert torch.equal(pgd(three, x, TargetedMisclassification(t, y3), [0.3]).success[0], _pred(three, pgd(
        three, x, TargetedMisclassification(t, y3), [0.3]).x_adv[0]) == t)
    with pytest.raises(InputError, match=r"0\.\.2"):
        fgsm(three, x, Misclassification(torch.full_like(y3, 3)), [0.1])


def test_bounds_and_normalized_wrapper(linear: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    mean, std = 0.1307, 0.3081
    on_normalised = nn.Sequential(copy.deepcopy(linear))
    on_normalised.register_forward_pre_hook(lambda _m, args: (args[0] * std + mean,))  # a model fed (x − μ)/σ
    wrapped = Normalized(on_normalised, mean, std)
    a = pgd(linear, x, Misclassification(y), [0.1], random_start=False, steps=5)
    b = pgd(wrapped, x, Misclassification(y), [0.1], random_start=False, steps=5)
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-5)
    assert torch.equal(b.success[0], _pred(wrapped, b.x_adv[0]) != y)
    # a model on [−1, 1]: the same attack with bounds=(−1, 1) and doubled budget
    signed = nn.Sequential(copy.deepcopy(linear))
    signed.register_forward_pre_hook(lambda _m, args: ((args[0] + 1) / 2,))
    u = 2 * x - 1
    with pytest.raises(InputError, match="bounds"):
        fgsm(signed, u, Misclassification(y), [0.2])
    c = fgsm(signed, u, Misclassification(y), [0.2], bounds=(-1, 1))
    d = fgsm(linear, x, Misclassification(y), [0.1])
    assert torch.allclose((c.x_adv + 1) / 2, d.x_adv, atol=1e-6)
    assert float(c.x_adv.min()) >= -1 and float(c.x_adv.max()) <= 1


def test_each_row_keeps_its_own_curvature_history() -> None:
    """Row 0 stores a pair on every pass, row 1 on two passes only: row 1 must keep both of its pairs
    (one shared ring pointer used to overwrite them with empty slots on the passes where it stored none)."""
    gen = torch.Generator().manual_seed(0)
    m, n, dim, passes = 3, 2, 6, 6
    S, Y = torch.zeros(m, n, dim, dtype=torch.float64), torch.zeros(m, n, dim, dtype=torch.float64)
    rho, newest = torch.zeros(m, n, dtype=torch.float64), torch.full((n,), m - 1)
    ref_S, ref_Y = torch.zeros(m, 1, dim, dtype=torch.float64), torch.zeros(m, 1, dim, dtype=torch.float64)
    ref_rho, ref_newest = torch.zeros(m, 1, dtype=torch.float64), torch.full((1,), m - 1)
    for k in range(passes):
        s = torch.randn(n, dim, generator=gen, dtype=torch.float64)
        y = s * (1 + torch.rand(n, dim, generator=gen, dtype=torch.float64))
        sy = (s * y).sum(1)
        store = torch.tensor([True, k in (0, 2)])
        store_pairs(S, Y, rho, newest, s, y, sy, store)
        if k in (0, 2):
            store_pairs(ref_S, ref_Y, ref_rho, ref_newest, s[1:], y[1:], sy[1:], torch.tensor([True]))
    assert int((rho[:, 1] != 0).sum()) == 2 and int((rho[:, 0] != 0).sum()) == m
    g = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    ones, gamma, need = torch.ones(n, dim, dtype=torch.float64), torch.ones(n, dtype=torch.float64), torch.ones(
        n, dtype=torch.bool)
    d = torch.zeros(n, dim, dtype=torch.float64)
    _direction(d, ones.clone(), g, ones, S, Y, rho, gamma, newest, need)
    d_ref = torch.zeros(1, dim, dtype=torch.float64)
    _direction(d_ref, ones[:1].clone(), g[1:], ones[:1], ref_S, ref_Y, ref_rho, gamma[:1], ref_newest, need[:1])
    assert torch.allclose(d[1], d_ref[0], rtol=1e-12)
    assert not torch.allclose(d[1], -g[1])  # the pairs are used


def test_native_cache_is_verified_and_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler: the torch code runs instead of the kernel")
    from blindspots.attacks import native

    monkeypatch.setenv("BLINDSPOTS_HOME", str(tmp_path))
    monkeypatch.setattr(native, "_state", {})
    assert native._library() is not None
    (lib,) = (tmp_path / "native").glob("*.so")
    whole = lib.read_bytes()
    assert lib.with_suffix(".sha256").read_text().strip() and native._verified(lib, lib.with_suffix(".sha256"))
    for damage in (whole[: len(whole) // 2], b"not a shared library", b""):
        (tmp_path / "damaged").write_bytes(damage)  # truncated, replaced, emptied (a new file: the loaded
        os.replace(tmp_path / "damaged", lib)  # library stays mapped in this process)
        monkeypatch.setattr(native, "_state", {})
        assert native._library() is not None
        assert native._verified(lib, lib.with_suffix(".sha256")) and len(lib.read_bytes()) > len(damage)


def test_single_thread_uses_threadpoolctl() -> None:
    from threadpoolctl import threadpool_info

    from blindspots.attacks import threads

    with threads.single_thread():
        assert torch.get_num_threads() == 1
        assert all(info["num_threads"] == 1 for info in threadpool_info() if info["user_api"] == "blas")
    assert "/proc/self/maps" not in Path(threads.__file__).read_text()


def test_softmax_outputs_are_refused_by_attacks_and_the_model_check(linear: nn.Module,
                                                                    data: tuple[torch.Tensor, torch.Tensor]) -> None:
    from blindspots.models.external import check_outputs

    x, y = data
    soft = nn.Sequential(linear, nn.Softmax(dim=1))
    with pytest.raises(InputError, match="drop the final softmax") as attack_error:
        fgsm(soft, x, Misclassification(y), [0.1])
    with pytest.raises(InputError, match="drop the final softmax") as check_error:
        check_outputs(soft, x)
    assert str(attack_error.value) == str(check_error.value)
    assert fgsm(nn.Sequential(linear, nn.LogSoftmax(dim=1)), x, Misclassification(y), [0.1]).success.shape == (1, 16)


def test_cli_runs_every_new_method(tmp_path: Path, linear: nn.Module, capsys: pytest.CaptureFixture[str]) -> None:
    model_args = [LINEAR["spec"], "--train-subset", str(LINEAR["train_subset"])]
    for method, extra in (("pgd", ["--eps", "0.1", "--param", "steps=5", "--param", "norm=linf"]),
                          ("deepfool", []), ("cw", ["--param", "steps=10", "--param", "search_steps=1"])):
        out = tmp_path / method
        assert main(["attack", *model_args, "--method", method, "--n", "6", "--out", str(out), "--no-progress",
                     *extra]) == 0, capsys.readouterr().err
        summary = json.loads((out / "summary.json").read_text())
        assert summary["attack"].startswith(method) and "clean_errors" in summary
    assert main(["attack", *model_args, "--method", "deepfool", "--param", "stepz=3", "--n", "2",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "no parameter stepz" in capsys.readouterr().err
    assert main(["attack", *model_args, "--method", "deepfool", "--eps", "0.1", "--n", "2",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--eps belongs to" in capsys.readouterr().err
    assert main(["attack", *model_args, "--epochs", "0", "--method", "fgsm", "--n", "2",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "--epochs must be at least 1" in err and "not been trained" not in err


@pytest.mark.parametrize("targeted", [False, True])
def test_criterion_losses_have_exact_parallel_gradients(targeted: bool) -> None:
    """Every criterion loss descends towards the criterion; "ce" and "logodds" point the same way as the
    textbook cross-entropy (checked in float64), and neither vanishes in float32 where softmax saturates."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(6, 10, generator=gen, dtype=torch.float64) * 3
    z[0, 0], z[1, 1] = 40.0, -40.0  # one confidently right, one confidently wrong (labels 0..5)
    z.requires_grad_(True)
    y = torch.arange(6)
    own = (y + 1) % 10 if targeted else y
    crit = TargetedMisclassification(own, y) if targeted else Misclassification(y)
    onehot = torch.nn.functional.one_hot(own, 10).double()
    q = z.detach().masked_fill(onehot.bool(), float("-inf")).softmax(1)  # softmax over the rival classes
    direction = q - onehot if targeted else onehot - q  # the cross-entropy's gradient / (1 − p_own), formed stably
    ref = torch.nn.functional.cross_entropy(z, own, reduction="none")
    (g_ref,) = torch.autograd.grad((ref if targeted else -ref).sum(), z)
    unsaturated = torch.arange(6) >= 2
    one = torch.ones(6, dtype=torch.float64)
    assert torch.allclose(torch.nn.functional.cosine_similarity(g_ref, direction)[unsaturated], one[unsaturated])
    for kind in ("ce", "logodds", "margin"):
        assert torch.autograd.gradcheck(lambda t: crit.loss(t, kind), (z.detach().requires_grad_(True),))
        (g,) = torch.autograd.grad(crit.loss(z, kind).sum(), z)
        if kind == "logodds" or (kind == "ce" and not targeted):
            unit = g / g.norm(dim=1, keepdim=True)  # (cosine_similarity clamps norms below 1e-8)
            assert torch.allclose(torch.nn.functional.cosine_similarity(unit, direction), one)
        assert torch.equal(crit.loss(z, "margin") < 0, crit.is_adversarial(z))
    z32 = z.detach().float().requires_grad_(True)
    (g32,) = torch.autograd.grad(crit.loss(z32, "logodds").sum(), z32)
    assert bool((g32.abs().sum(1) > 0.5).all())  # e_y − q: unit-scale in every row, saturated or not


def test_entry_point_counts_passes_and_records_params(linear: nn.Module,
                                                      data: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The one entry point (attacks.base.attack): model passes counted per image, whatever the batch size, the
    entry's own input check and re-verification left out; params are the bound arguments; signatures are the
    registry's."""
    import inspect

    from blindspots.attacks import ATTACKS, noise_attack
    from blindspots.attacks.base import PassCounter

    x, y = data
    n = x.shape[0]
    f = fgsm(linear, x, Misclassification(y), [0.1, 0.2])
    assert (f.n_forward, f.n_backward) == (n, n)  # one forward+backward gives the sign; the K re-checks are free
    for batch in (1000, 5):
        p = pgd(linear, x, Misclassification(y), [0.1, 0.3], steps=3, batch_size=batch)
        assert (p.n_forward, p.n_backward) == (2 * 3 * n, 2 * 3 * n) and p.passes_per_image() == (6.0, 6.0)
    p2 = pgd(linear, x, Misclassification(y), [0.1], steps=3, restarts=2)
    assert (p2.n_forward, p2.n_backward) == (2 * (3 + 1) * n, 2 * 3 * n)  # each restart's margin: one more forward
    assert (noise_attack(linear, x, Misclassification(y), [0.1]).n_forward) == 0
    d = deepfool(linear, x, Misclassification(y), candidates=3)
    assert d.n_forward > 0 and d.n_backward == 3 * d.n_forward  # one gradient per candidate class
    counter = PassCounter(linear)
    counter(x.requires_grad_(True)).sum().backward()
    assert (counter.forward_passes, counter.backward_passes) == (n, n)

    assert p.params == {"epsilons": [0.1, 0.3], "norm": "linf", "steps": 3, "step_size": None, "restarts": 1,
                        "random_start": True, "schedule": "constant", "loss": "logodds", "seed": 0, "batch_size": 5,
                        "bounds": [0.0, 1.0]}
    assert list(inspect.signature(pgd).parameters)[:4] == ["model", "images", "criterion", "epsilons"]
    assert ATTACKS["lbfgs-all-targets"].params == ATTACKS["lbfgs"].params
    with pytest.raises(InputError, match="tries every other label"):
        ATTACKS["lbfgs-all-targets"](linear, x, TargetedMisclassification((y + 1) % 10, y))
