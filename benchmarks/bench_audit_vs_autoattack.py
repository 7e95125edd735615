"""`blindspots audit` against torchattacks' AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square) on the same MNIST
test images: robust accuracy side by side at L∞ 0.1/0.2/0.3 and L2 1/1.5/2, the images each finds adversarial
that the other misses, the wall time of each, and the model's forward and backward passes per image (counted by
hooks on the model, so machine-independent). The audit's per-image verdict is read back from the examples it keeps
(stages/verdict-*/best_examples.safetensors) and re-checked here by a forward pass. The audit's time is split into
its attacks (what the robust accuracy rests on) and its certified bounds (CROWN/IBP and the exact MILP, which
AutoAttack has no counterpart of).

    pip install --no-deps torchattacks==3.5.1    # benchmark only; the package never imports it
    python benchmarks/bench_audit_vs_autoattack.py [--n 200] [--models CNN,FC100-100-10,relu-cnn,masked] [--fast]
        [--device cuda] [--audit-only]

Models: zoo specs (trained once into the store), "relu-cnn", a small ReLU CNN trained here for 2 epochs on 20,000
training images, and "masked", a 784-128-10 ReLU net behind input rounding and logits × 1000 (gradient masking:
robust accuracy near 100% to a gradient attack, near 0% in truth). `--device cuda` runs both sides on the GPU.
"""

from __future__ import annotations

import argparse
import json
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


class PassCounter:
    """Forward and backward passes of a model, in images: a forward hook adds each batch's rows, and a gradient
    hook on the logits adds them again when a backward pass runs through the model."""

    def __init__(self, model: nn.Module) -> None:
        self.forward = self.backward = 0
        model.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        rows = int(out.shape[0])
        self.forward += rows
        if out.requires_grad:
            out.register_hook(lambda g: self._backward(rows))

    def _backward(self, rows: int) -> None:
        self.backward += rows

    def take(self) -> tuple[int, int]:
        """The counts since the last take."""
        out = (self.forward, self.backward)
        self.forward = self.backward = 0
        return out


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
    ap.add_argument("--audit-only", action="store_true",
                    help="the audit's side alone (robust accuracy, time, passes), e.g. after a change to the audit; "
                         "AutoAttack's side does not change with it")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_eval_data("mnist", n=args.n)
    x, y = data.images.to(args.device), data.labels.to(args.device)
    for name in args.models.split(","):
        model = load(name, args.device)
        counter = PassCounter(model)
        out = Path(tempfile.mkdtemp(prefix="bench-aa-"))
        t0 = time.perf_counter()
        run_audit(AuditConfig([LoadedModel(name, model, name)], n=args.n, out=out, eps_linf=EPS["linf"],
                              eps_l2=EPS["l2"], fast=args.fast, progress=False,
                              device=args.device), announce=lambda _: None)
        t_audit = time.perf_counter() - t0
        f_audit, b_audit = counter.take()
        t_bounds = json.loads((out / "results.json").read_text(encoding="utf-8"))["wall_time_s"].get("bounds", 0.0)
        from safetensors.torch import load_file

        best = load_file(str(next(out.glob("stages/verdict-*")) / "best_examples.safetensors"), device=args.device)
        print(f"\n{name}: {args.n} images; audit {t_audit:.0f} s: attacks {t_audit - t_bounds:.0f} s, certified "
              f"bounds {t_bounds:.0f} s; {f_audit / args.n:.0f} forward and {b_audit / args.n:.0f} backward passes "
              f"per image, all six ε and every stage ({out})")
        print(f"{'norm':<5}{'ε':>6}{'audit':>9}{'AutoAttack':>12}{'audit only':>12}{'AA only':>9}{'AA s':>8}"
              f"{'AA fwd/img':>12}{'AA bwd/img':>12}")
        t_aa = f_aa = b_aa = 0.0
        for norm, grid in EPS.items():
            for k, eps in enumerate(grid):
                with torch.no_grad():
                    ours = model(best[norm][:, k]).argmax(1) != y
                if args.audit_only:
                    print(f"{norm:<5}{eps:>6g}{1 - float(ours.double().mean()):>9.1%}")
                    continue
                counter.take()
                t = time.perf_counter()
                theirs = autoattack(model, x, y, norm, eps)
                dt = time.perf_counter() - t
                f, b = counter.take()
                t_aa, f_aa, b_aa = t_aa + dt, f_aa + f, b_aa + b
                print(f"{norm:<5}{eps:>6g}{1 - float(ours.double().mean()):>9.1%}"
                      f"{1 - float(theirs.double().mean()):>12.1%}{int((ours & ~theirs).sum()):>12}"
                      f"{int((theirs & ~ours).sum()):>9}{dt:>8.0f}{f / args.n:>12.0f}{b / args.n:>12.0f}")
        if args.audit_only:
            continue
        print(f"AutoAttack, six ε: {t_aa:.0f} s, {f_aa / args.n:.0f} forward and {b_aa / args.n:.0f} backward passes "
              f"per image; audit / AutoAttack time: {t_audit / t_aa:.2f} in all, {(t_audit - t_bounds) / t_aa:.2f} "
              f"for the attacks alone")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
