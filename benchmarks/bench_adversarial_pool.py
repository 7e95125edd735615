"""Cost of §4.2 training on an adversarial pool: plain FC100-100-10 training against pool training on the same
subset, seed and epochs, alternating the two R times (median reported, so load from other processes hits both
alike), with the share of the pool run spent in the L-BFGS attacks and the test error of each.

    python benchmarks/bench_adversarial_pool.py [--subset N] [--epochs E] [--repeats R] [--refresh-every K]
                                                [--threads T]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from blindspots.data import load_mnist
from blindspots.models import error_rate, fit
from blindspots.training.pool import PoolConfig, train_with_pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subset", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--refresh-every", type=int, default=PoolConfig().refresh_every)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data, test = load_mnist("train", subset=args.subset), load_mnist("test")
    config = replace(PoolConfig(), refresh_every=args.refresh_every)
    plain_s, pool_s, attack_s = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        plain, _ = fit("FC100-100-10", data, seed=0, epochs=args.epochs, progress=False)
        plain_s.append(time.perf_counter() - t0)
        run = train_with_pool("FC100-100-10", data, config=config, seed=0, epochs=args.epochs)
        pool_s.append(run.wall_time)
        attack_s.append(run.attack_seconds)
    p, q, a = statistics.median(plain_s), statistics.median(pool_s), statistics.median(attack_s)
    print(f"{args.subset} images x {args.epochs} epochs, {torch.get_num_threads()} thread(s), median of {args.repeats}")
    print(f"plain: {p:.2f} s, test error {100 * error_rate(plain, test):.2f}%")
    print(f"pool:  {q:.2f} s ({q / p:.1f}x plain; attacks {a:.2f} s = {100 * a / q:.0f}%, "
          f"{run.stats['refreshes']} refreshes, {1000 * a / max(run.stats['refreshes'], 1):.0f} ms each), "
          f"test error {100 * error_rate(run.model, test):.2f}%")


if __name__ == "__main__":
    main()
