"""Cost of adversarial training: one epoch of FGSM adversarial training of the maxout net against one
plain epoch (goal: ratio <= 2.5x), the noise controls for comparison, and optionally the wall time of
whole `reproduce goodfellow2015` profiles.

    python benchmarks/bench_adv_training.py [--subset N] [--repeats R] [--profiles quick,standard]

Epochs alternate plain / adversarial / ... and the best (min) of R repeats is the headline, the
median beside it: on a shared machine bursts of load from other processes inflate single epochs many
times over, and the minimum is the least disturbed measurement of each variant. Profiles run into a fresh temporary folder (their trained
models are reused from the checkpoint store if present: delete it, or read the stage wall times in the
report, for cold timings).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from blindspots.data import load_mnist
from blindspots.training.adversarial import Objective
from blindspots.models.train import _sgd_epochs, default_recipe
from blindspots.models.zoo import build_model

VARIANTS = {"plain": None, "fgsm": Objective("fgsm", 0.25, 0.5), "sign_noise": Objective("sign_noise", 0.25, 0.5),
            "uniform_noise": Objective("uniform_noise", 0.25, 0.5)}


def one_epoch(x: torch.Tensor, y: torch.Tensor, objective: Objective | None) -> float:
    torch.manual_seed(0)
    model = build_model("MAXOUT")
    recipe = replace(default_recipe("MAXOUT"), epochs=1)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    _sgd_epochs(model, list(model.parameters()), x, y, recipe, 1, gen, torch.device("cpu"), "bench", False,
                objective=objective)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--subset", type=int, default=None, help="training images per epoch (default: all 60,000)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profiles", default="", help="comma-separated reproduce profiles to time, e.g. quick")
    args = ap.parse_args()
    data = load_mnist("train", subset=args.subset)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MAXOUT, {len(data)} images per epoch, "
          f"batch {default_recipe('MAXOUT').batch_size}, best and median of {args.repeats}")
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for _ in range(args.repeats):
        for name, objective in VARIANTS.items():
            times[name].append(one_epoch(data.images, data.labels, objective))
    plain, plain_med = min(times["plain"]), statistics.median(times["plain"])
    print(f"{'epoch':<16} {'best s':>8} {'x plain':>8} {'median s':>9} {'x plain':>8}")
    for name, ts in times.items():
        best, med = min(ts), statistics.median(ts)
        print(f"{name:<16} {best:8.2f} {best / plain:8.2f} {med:9.2f} {med / plain_med:8.2f}")
    ratio = min(times["fgsm"]) / plain
    print(f"FGSM adversarial training / plain epoch: {ratio:.2f}x (goal <= 2.5x: {'met' if ratio <= 2.5 else 'missed'})")

    for profile in filter(None, args.profiles.split(",")):
        from blindspots.experiments.goodfellow2015 import reproduce

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            results = reproduce(Path(tmp) / profile, profile, progress=False, announce=lambda s: None)
            wall = time.perf_counter() - t0
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in results["wall_time_s"].items())
        print(f"profile {profile}: {wall:.0f} s wall ({stages})")


if __name__ == "__main__":
    main()
