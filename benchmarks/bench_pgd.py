"""PGD L∞ side by side in one run: ours against a hand-written torch loop and against torchattacks 3.5.1.

Madry et al.'s MNIST setting: ε = 0.3, 40 steps of 0.01, a uniform random start in the ε-ball, untargeted,
on FC100-100-10 and the CNN (trained on full MNIST through blindspots.train; reused from the model store
when there). All three attack the same model on the same test images:

- ours: `blindspots.attacks.pgd` (validates inputs, eval mode with frozen parameters, clean-error flags,
  a fresh forward pass for success, per-image distortions);
- the loop: the same computation written out (same random start, cross-entropy of the label, sign step,
  projection, one forward pass for success) — the floor ours should stay within 1.1× of;
- torchattacks.PGD (its own random start from torch's global generator), success by one forward pass.

Printed beside each time: model passes per image, forward and backward (ours counted by the attack entry
point, `result.passes_per_image()`; the loop's and torchattacks' by construction; the final success check
left out for all three), a cost that does not depend on the machine. Without torchattacks installed its row is left out. Times are the best of --repeats rounds, the three interleaved in each round (single-threaded by default:
a shared machine punishes thread pools).
Agreement with the loop: our default loss (the criterion's "logodds") has a gradient parallel to the loop's
cross-entropy gradient, so the sign steps agree except where float32 rounding decides the sign of a
near-zero component; on a ReLU net one such pixel changes the rest of its image's trajectory, so
identical pixels are fewer there while success agrees.

    pip install --no-deps torchattacks==3.5.1      # the [peers] extra; imported here only
    python benchmarks/bench_pgd.py                  # 1000 test images per model
    python benchmarks/bench_pgd.py --n 200 --repeats 1
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import types
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from blindspots import train
from blindspots.attacks import Misclassification, pgd
from blindspots.data import load_mnist
from blindspots.models import predict

EPS, ALPHA, STEPS, SEED = 0.3, 0.01, 40, 0


def import_torchattacks() -> types.ModuleType:
    """torchattacks, with any module it imports but this benchmark never uses stubbed (not installed)."""
    for _ in range(10):
        try:
            return importlib.import_module("torchattacks")
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.startswith("torchattacks"):
                raise
            sys.modules[exc.name] = types.ModuleType(exc.name)  # e.g. torchvision, requests
    raise ImportError("torchattacks needs more modules than this benchmark can stub")


def random_start(x: Tensor) -> Tensor:
    """The start ours draws for seed SEED (attacks.pgd: one CPU generator, torch.rand over the batch)."""
    gen = torch.Generator().manual_seed(SEED)
    return (torch.rand(x.shape, generator=gen, dtype=torch.float32) * 2 - 1) * EPS


def hand_loop(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Madry et al.'s PGD written out: (x_adv, success)."""
    model.eval()
    x_adv = (x + random_start(x)).clamp(0, 1)
    for _ in range(STEPS):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = x_adv.detach() + ALPHA * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS).clamp(0, 1)
    with torch.no_grad():
        success = model(x_adv).argmax(1) != y
    return x_adv, success


PASSES: dict[str, tuple[float, float]] = {}  # ours: model passes per image (forward, backward), from the result


def ours(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    res = pgd(model, x, Misclassification(y), [EPS], steps=STEPS, step_size=ALPHA, seed=SEED, batch_size=x.shape[0])
    PASSES["ours"] = res.passes_per_image()
    return res.x_adv[0], res.success[0]


def peer(model: nn.Module, x: Tensor, y: Tensor, torchattacks: types.ModuleType) -> tuple[Tensor, Tensor]:
    torch.manual_seed(SEED)
    x_adv = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)(x, y)
    with torch.no_grad():
        success = model(x_adv).argmax(1) != y
    return x_adv, success


def best_times(runs: dict[str, Callable[[], tuple[Tensor, Tensor]]],
               repeats: int) -> dict[str, tuple[float, tuple[Tensor, Tensor]]]:
    """Best wall time of each run over `repeats` rounds, the runs interleaved within each round (so a change
    in the machine's load hits all of them alike), and each run's last output."""
    best: dict[str, tuple[float, tuple[Tensor, Tensor]]] = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            out = fn()
            elapsed = time.perf_counter() - t0
            best[name] = (min(elapsed, best[name][0]) if name in best else elapsed, out)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="test images per model (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the best time is kept")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["FC100-100-10", "CNN"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        torchattacks: types.ModuleType | None = import_torchattacks()
    except ImportError:
        torchattacks = None  # the peer is left out
    data = load_mnist("test", subset=args.n)
    x, y = data.images, data.labels
    print(f"PGD L∞, ε = {EPS}, {STEPS} steps of {ALPHA}, random start, untargeted; {args.n} MNIST test images; "
          f"torch {torch.__version__}, torchattacks "
          f"{torchattacks.__version__ if torchattacks else 'not installed (left out)'}, {args.threads} thread(s), "
          f"best of {args.repeats}")
    for spec in args.models:
        model = train(spec, progress=False).model
        clean = float((predict(model, x) != y).float().mean())
        runs = {"ours": lambda: ours(model, x, y), "hand loop": lambda: hand_loop(model, x, y)}  # noqa: B023
        if torchattacks is not None:
            runs["torchattacks"] = lambda: peer(model, x, y, torchattacks)  # noqa: B023
        best = best_times(runs, args.repeats)
        t_ours, (a_ours, s_ours) = best["ours"]
        t_loop, (a_loop, s_loop) = best["hand loop"]
        same_pixels = float((a_ours == a_loop).float().mean())
        same_success = float((s_ours == s_loop).float().mean())
        # model passes per image: ours counted by the attack entry point; the loop's and torchattacks' by
        # construction (STEPS forward+backward); the final success check is left out for all three
        passes = {"ours": PASSES["ours"], "hand loop": (float(STEPS), float(STEPS)),
                  "torchattacks": (float(STEPS), float(STEPS))}
        print(f"\n{spec} (clean test error on these images {clean:.2%})")
        print(f"  {'':14}{'time s':>9}{'success':>9}{'ours / it':>11}{'fwd/img':>9}{'bwd/img':>9}")
        for name, (t, (_, s)) in best.items():
            print(f"  {name:14}{t:9.3f}{float(s.float().mean()):9.2%}{t_ours / t:11.3f}"
                  f"{passes[name][0]:9.1f}{passes[name][1]:9.1f}")
        print(f"  ours vs loop: {same_pixels:.4%} of pixels identical, success agrees on {same_success:.2%} of images")
        print(f"  targets: ours <= 1.1x the loop: {'met' if t_ours <= 1.1 * t_loop else 'NOT met'}"
              + (f"; ours <= torchattacks: {'met' if t_ours <= best['torchattacks'][0] else 'NOT met'}"
                 if "torchattacks" in best else ""))

if __name__ == "__main__":
    main()
