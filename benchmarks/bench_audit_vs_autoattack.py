"""`blindspots audit` against torchattacks' AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square) on the same MNIST
test images: robust accuracy side by side at L∞ 0.1/0.2/0.3 and L2 1/1.5/2, the images each finds adversarial
that the other misses, and the wall time of each. The audit's per-image verdict is read back from the examples it
keeps (stages/verdict-*/best_examples.safetensors) and re-checked here by a forward pass.

    pip install --no-deps torchattacks==3.5.1    # benchmark only; the package never imports it
    python benchmarks/bench_audit_vs_autoattack.py [--n 200] [--models CNN,FC100-100-10,relu-cnn,masked] [--fast] [--device cuda]

Models: zoo specs (trained once into the store), "relu-cnn", a small ReLU CNN trained here for 2 epochs on 20,000
training images, and "masked", a 784-128-10 ReLU net behind input rounding and logits × 1000 (gradient masking:
robust accuracy near 100% to a gradient attack, near 0% in truth). `--device cuda` runs both sides on the GPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from blindspots.audit import AuditConfig, run_audit
from blindspots.data.user import load_eval_data
from blindspots.models import train
from blindspots.models.controls import GradientMasked, fit_control, relu_cnn, relu_mlp
from blindspots.models.external import LoadedModel

EPS = {"linf": (0.1, 0.2, 0.3), "l2": (1.0, 1.5, 2.0)}


def load(name: str, device: str) -> nn.Module:
    """A zoo spec from the store (trained on `device` the first time), or one of the control models."""
    if name == "relu-cnn":
        return fit_control(relu_cnn(), images=20_000, epochs=2, batch=100, device=device)
    if name == "masked":
        return GradientMasked(fit_control(relu_mlp(128), images=10_000, epochs=3, batch=100, device=device)).eval()
    return train(name, progress=False, device=device).model.eval()


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Per image: broken (misclassified) under torchattacks' standard AutoAttack at ε, re-checked here."""
    import torchattacks

    atk = torchattacks.AutoAttack(model, norm="Linf" if norm == "linf" else "L2", eps=eps, version="standard",
                                  n_classes=10, seed=0)
    adv = atk(x, y).detach()
    size = (adv - x).flatten(1)
    size = size.abs().amax(1) if norm == "linf" else size.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-4) + 1e-6, "AutoAttack left the ε-ball"
    with torch.no_grad():
        return model(adv).argmax(1) != y


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--models", default="CNN,FC100-100-10,relu-cnn")
    ap.add_argument("--fast", action="store_true", help="the audit's --fast")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_eval_data("mnist", n=args.n)
    x, y = data.images.to(args.device), data.labels.to(args.device)
    for name in args.models.split(","):
        model = load(name, args.device)
        out = Path(tempfile.mkdtemp(prefix="bench-aa-"))
        t0 = time.perf_counter()
        run_audit(AuditConfig([LoadedModel(name, model, name)], n=args.n, out=out, eps_linf=EPS["linf"],
                              eps_l2=EPS["l2"], fast=args.fast, progress=False,
                              device=args.device), announce=lambda _: None)
        t_audit = time.perf_counter() - t0
        from safetensors.torch import load_file

        best = load_file(str(next(out.glob("stages/verdict-*")) / "best_examples.safetensors"), device=args.device)
        print(f"\n{name}: {args.n} images; audit {t_audit:.0f} s (all its stages)")
        print(f"{'norm':<5}{'ε':>6}{'audit':>9}{'AutoAttack':>12}{'audit only':>12}{'AA only':>9}{'AA s':>8}")
        for norm, grid in EPS.items():
            for k, eps in enumerate(grid):
                with torch.no_grad():
                    ours = model(best[norm][:, k]).argmax(1) != y
                t = time.perf_counter()
                theirs = autoattack(model, x, y, norm, eps)
                t_aa = time.perf_counter() - t
                print(f"{norm:<5}{eps:>6g}{1 - float(ours.double().mean()):>9.1%}"
                      f"{1 - float(theirs.double().mean()):>12.1%}{int((ours & ~theirs).sum()):>12}"
                      f"{int((theirs & ~ours).sum()):>9}{t_aa:>8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
