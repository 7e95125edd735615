"""`--device cuda` end to end where a GPU exists (the whole module is skipped elsewhere, as on CI): a zoo net
trained on the GPU loads on the CPU with the same predictions; every registered attack runs on the GPU and each
example it reports is adversarial to the CPU copy of the model too; CROWN's bounds agree across devices; the
original maxout recipe trains adversarially on the GPU; a Normalized wrapper built around a GPU model runs there;
and the audit runs there."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from blindspots.attacks import Misclassification, Normalized, run_attack, verify
from blindspots.attacks.registry import ATTACKS
from blindspots.audit import AuditConfig, Effort, run_audit
from blindspots.data import load_mnist
from blindspots.models import fit, predict_logits, train
from blindspots.models.controls import fit_control, relu_mlp
from blindspots.models.external import LoadedModel
from blindspots.models.train import original_maxout_recipe
from blindspots.training import Objective
from blindspots.verify import margin_bounds

DEV = "cuda"
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

BUDGETS = {"epsilons": [0.1, 0.3], "sigmas": [0.3]}
QUICK = {"pgd": {"steps": 20}, "apgd": {"steps": 20}, "square": {"n_queries": 200}, "cw": {"steps": 50},
         "minimal-l2": {"steps": 20}, "lbfgs": {"search_steps": 5}, "lbfgs-all-targets": {"search_steps": 3},
         "hopskipjump": {"max_queries": 2000}}


@pytest.fixture(scope="module")
def nets() -> tuple[nn.Module, nn.Module]:
    gpu = fit_control(relu_mlp(64), images=5000, epochs=2, device=DEV)
    return gpu, copy.deepcopy(gpu).cpu()


def test_trained_on_cuda_loads_on_cpu(tmp_path: Path) -> None:
    kw = dict(epochs=1, train_subset=3000, store=tmp_path, progress=False)
    on_gpu = train("FC10(1e-4)", device=DEV, **kw)
    assert next(on_gpu.model.parameters()).device.type == DEV
    on_cpu = train("FC10(1e-4)", device="cpu", **kw)  # the stored checkpoint, not a retraining
    assert next(on_cpu.model.parameters()).device.type == "cpu"
    test = load_mnist("test", subset=1000)
    a, b = predict_logits(on_gpu.model, test.images), predict_logits(on_cpu.model, test.images)
    assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_runs_on_cuda(name: str, nets: tuple[nn.Module, nn.Module]) -> None:
    gpu, cpu = nets
    test = load_mnist("test", subset=32)
    x, y = test.images.to(DEV), test.labels.to(DEV)
    spec = ATTACKS[name]
    budgets = BUDGETS[spec.budgets] if spec.budgets else None
    r = run_attack(name, gpu, x, Misclassification(y), budgets, **QUICK.get(name, {}))
    assert r.x_adv.device.type == DEV and not gpu.training and all(p.grad is None for p in gpu.parameters())
    assert float(r.x_adv.min()) >= 0 and float(r.x_adv.max()) <= 1
    if name != "noise":
        assert bool(r.success.any()), f"{name} found nothing on a 2-epoch MLP"
    # each reported example re-checked on the CPU copy (logits agree to float tolerance, so allow the few
    # examples that sit on the boundary within it)
    again = verify(cpu, r.x_adv.cpu(), Misclassification(y.cpu()), per_budget=spec.budgets is not None)
    assert float((again != r.success.cpu()).double().mean()) <= 0.05, name


def test_square_l2_runs_on_cuda(nets: tuple[nn.Module, nn.Module]) -> None:
    """Square-L2 indexes its CPU draws (windows, η flips, signs) with the active images' indices: on the device."""
    gpu, cpu = nets
    test = load_mnist("test", subset=32)
    x, y = test.images.to(DEV), test.labels.to(DEV)
    r = run_attack("square", gpu, x, Misclassification(y), [1.0, 2.0], norm="l2", n_queries=200)
    assert r.x_adv.device.type == DEV and r.attack == "square-l2" and bool(r.success[1].any())
    assert float(r.x_adv.min()) >= 0 and float(r.x_adv.max()) <= 1
    assert float((r.x_adv[1] - x).flatten(1).norm(dim=1).max()) <= 2 * (1 + 1e-5)
    again = verify(cpu, r.x_adv.cpu(), Misclassification(y.cpu()), per_budget=True)
    assert float((again != r.success.cpu()).double().mean()) <= 0.05


def test_normalized_wrapper_of_a_gpu_model_runs_on_cuda(nets: tuple[nn.Module, nn.Module]) -> None:
    gpu, _ = nets
    test = load_mnist("test", subset=32)
    x, y = test.images.to(DEV), test.labels.to(DEV)
    wrapped = Normalized(gpu, [0.0], [1.0])  # no .to(DEV): its per-channel mean/std buffers stay on the CPU
    with torch.no_grad():
        assert torch.allclose(wrapped(x), gpu(x))
    r = run_attack("pgd", wrapped, x, Misclassification(y), [0.3], steps=10)
    assert r.x_adv.device.type == DEV and bool(r.success.any())


def test_crown_bounds_agree_across_devices(nets: tuple[nn.Module, nn.Module]) -> None:
    gpu, cpu = nets
    test = load_mnist("test", subset=64)
    lo_gpu = margin_bounds(gpu, test.images.to(DEV), test.labels.to(DEV), 0.02, norm="linf").cpu()
    lo_cpu = margin_bounds(cpu, test.images, test.labels, 0.02, norm="linf")
    assert torch.allclose(lo_gpu, lo_cpu, atol=1e-3, rtol=1e-4)


def test_original_maxout_recipe_trains_adversarially_on_cuda() -> None:
    data = load_mnist("train", subset=2000)
    model, _ = fit("MAXOUT", data, recipe=original_maxout_recipe(1), objective=Objective("fgsm", 0.25, 0.5),
                   device=DEV, progress=False)
    assert next(model.parameters()).device.type == DEV
    assert all(float(w.norm(dim=1).max()) <= 1.9365 + 1e-4 for n, w in model.named_parameters() if w.dim() == 2)


def test_audit_runs_on_cuda(tmp_path: Path, nets: tuple[nn.Module, nn.Module]) -> None:
    gpu, _ = nets
    effort = Effort(pgd_steps=10, apgd_steps=10, minimal_l2={"steps": 10, "lanes": 1}, lbfgs_images=10,
                    bisect_rounds=4, restarts=2, unit_directions=10, square_queries=100, apgd_targets=1,
                    exact_images=2, exact_max_unstable=10_000, exact_time_limit=60)
    results = run_audit(AuditConfig([LoadedModel("mlp", gpu, "control")], n=40, out=tmp_path, effort=effort,
                                    device=DEV, progress=False), announce=lambda _: None)
    m = results["per_model"]["mlp"]
    assert results["config"]["device"] == DEV and m["clean"]["accuracy"] > 0.8


def test_the_cli_turns_tf32_off_on_cuda() -> None:
    from blindspots.cli.common import check_device

    assert check_device(DEV) == DEV
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
