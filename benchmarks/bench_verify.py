"""Certified bounds and exact minimal perturbations: tightness and time.

1. CROWN vs IBP on the zoo's FC100-100-10 (sigmoid; trained through blindspots.train, reused from the model
   store when there; --train-subset/--epochs shorten its training on a busy machine): time for --n-crown test
   images at each ε, the median margin lower bound and the share certified. Goal: CROWN ≤ 10 s for 1,000 images.
2. Exact minimal L∞ (MILP, HiGHS) on 784-20-20-10 and 784-50-50-10 ReLU nets trained here (Adam, 1 epoch on
   10,000 images): seconds per image (median, max), statuses, the certified radii (IBP, CROWN) beside the exact
   value, and each attack's gap to exact (its L∞ distortion / exact: median and worst). Goal: median ≤ 15 s/image
   on 784-20-20-10. Beside it the exact minimal L2 (SCIP): seconds per image, statuses, the proven [lower, upper].

    python benchmarks/bench_verify.py --threads 1 --n-crown 1000 --n-exact 10
    python benchmarks/bench_verify.py --threads 1 --parts crown      # the CROWN timing alone
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from blindspots import train
from blindspots.attacks import Misclassification, run_attack
from blindspots.data import load_mnist
from blindspots.models.controls import fit_control, relu_mlp
from blindspots.verify import attack_upper_bounds, certified_radius, exact_minimal, margin_bounds


def relu_net(hidden: tuple[int, ...], seed: int = 0) -> nn.Module:
    """784-…-10 ReLU, one epoch of Adam on 10,000 training images (models.controls, as the tests use)."""
    return fit_control(relu_mlp(*hidden), images=10_000, seed=seed)


def crown_vs_ibp(args: argparse.Namespace) -> None:
    kw = {"train_subset": args.train_subset, "epochs": args.epochs} if args.train_subset else {}
    tm = train("FC100-100-10", progress=False, **kw)
    test = load_mnist("test", subset=args.n_crown)
    x, y = test.images, test.labels
    print(f"FC100-100-10 (sigmoid; trained on {args.train_subset or 60000} images; test error "
          f"{tm.meta.get('test_error', float('nan')):.4f}), {len(y)} test images")
    print(f"{'ε':>6} {'method':>7} {'seconds':>8} {'median margin bound':>20} {'certified':>9}")
    for eps in args.eps:
        for method in ("ibp", "crown"):
            t0 = time.perf_counter()
            m = margin_bounds(tm.model, x, y, eps, method=method).amin(1)
            dt = time.perf_counter() - t0
            print(f"{eps:>6.3f} {method:>7} {dt:>8.2f} {float(m.median()):>20.3f} {float((m > 0).float().mean()):>9.3f}")


def exact_linf(args: argparse.Namespace) -> None:
    test = load_mnist("test", subset=200)
    for hidden in ((20, 20), (50, 50)):
        model = relu_net(hidden)
        with torch.no_grad():
            ok = model(test.images).argmax(1) == test.labels
        x, y = test.images[ok][:args.n_exact], test.labels[ok][:args.n_exact]
        name = "784-" + "-".join(map(str, hidden)) + "-10"
        t0 = time.perf_counter()
        r = exact_minimal(model, x, y, norm="linf", time_limit=args.time_limit)
        wall = time.perf_counter() - t0
        proven = torch.tensor([s == "optimal" for s in r.status])
        times = r.solve_time.tolist()
        print(f"\n{name}: {len(y)} correctly classified test images, time limit {args.time_limit:.0f} s/image; "
              f"whole call {wall:.1f} s (attacks for the incumbents included)")
        print(f"  solve seconds/image: median {statistics.median(times):.2f}, max {max(times):.2f}; statuses "
              f"{ {s: r.status.count(s) for s in set(r.status)} }; target classes pruned by bounds: "
              f"mean {r.targets_pruned.float().mean():.1f} of 9")
        t0 = time.perf_counter()
        radii = {m: certified_radius(model, x, y, method=m) for m in ("ibp", "crown")}
        print(f"  certified radius (IBP, CROWN) for all {len(y)} images: {time.perf_counter() - t0:.2f} s")
        exact = torch.where(proven, r.value, r.lower)
        print(f"  median L∞: IBP radius {radii['ibp'].median():.4f} ≤ CROWN radius {radii['crown'].median():.4f} "
              f"≤ exact {exact.median():.4f} (lower bound where not proven)")
        crit = Misclassification(y)
        found = {"fgsm-min": run_attack("fgsm-min", model, x, crit).x_adv,
                 "pgd-bisection": attack_upper_bounds(model, x, y, "linf"),
                 "deepfool": run_attack("deepfool", model, x, crit).x_adv,
                 "minimal-l2": run_attack("minimal-l2", model, x, crit).x_adv}
        print(f"  {'attack':>14} {'found':>6} {'median L∞/exact':>16} {'worst':>8}")
        for attack, adv in found.items():
            with torch.no_grad():
                hit = crit.is_adversarial(model(torch.nan_to_num(adv))) & proven
            linf = (adv - x).flatten(1).abs().amax(1).double()
            ratio = (linf[hit] / r.value[hit]).tolist()
            if ratio:
                print(f"  {attack:>14} {int(hit.sum()):>6} {statistics.median(ratio):>16.3f} {max(ratio):>8.3f}")
            else:
                print(f"  {attack:>14} {0:>6}")
        exact_l2(model, x, y, args.l2_time_limit)


def exact_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, time_limit: float) -> None:
    """The exact minimal L2 (SCIP) beside L∞: solve time, statuses, and the proven bracket [lower, upper] (its
    median width where the time ran out), with the CROWN L2 radius below it."""
    r = exact_minimal(model, x, y, norm="l2", time_limit=time_limit)
    times = r.solve_time.tolist()
    flagged = sum(bool(f) for f in r.flags)
    statuses = {s: r.status.count(s) for s in set(r.status)}
    print(f"  exact L2 (SCIP), time limit {time_limit:.0f} s/image: solve seconds/image median "
          f"{statistics.median(times):.2f}, max {max(times):.2f}; statuses {statuses}; FLAGs {flagged}")
    radius = certified_radius(model, x, y, norm="l2")
    print(f"  median L2: CROWN radius {radius.median():.4f} ≤ lower {r.lower.median():.4f} ≤ upper "
          f"{r.upper.median():.4f}; median (upper − lower) / upper {((r.upper - r.lower) / r.upper).median():.2e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-crown", type=int, default=1000)
    p.add_argument("--n-exact", type=int, default=10)
    p.add_argument("--eps", type=float, nargs="+", default=[0.01, 0.03])
    p.add_argument("--time-limit", type=float, default=120.0)
    p.add_argument("--l2-time-limit", type=float, default=120.0, help="seconds per image of the exact L2 (SCIP)")
    p.add_argument("--train-subset", type=int, default=None, help="train FC100-100-10 on this many images only")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")),
                   help="torch threads (default: OMP_NUM_THREADS, else 1); the target is for 2 cores")
    p.add_argument("--parts", nargs="+", choices=("crown", "exact"), default=["crown", "exact"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}; load average before: {os.getloadavg()}")
    if "crown" in args.parts:
        crown_vs_ibp(args)
    if "exact" in args.parts:
        exact_linf(args)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
