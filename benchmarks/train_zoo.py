"""Train the Table 1 zoo (plus the Table 3 models with --all) on full MNIST from scratch and print, per
model, test error beside the paper's, and wall time. Goal: the Table 1 zoo in <= 10 minutes on 2 cores.

    python benchmarks/train_zoo.py [--all] [--subset N] [--keep]

Models are trained into a fresh temporary store (never reused), unless --keep stores them in
$BLINDSPOTS_HOME so later runs reuse them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from blindspots.models import train
from blindspots.report.reference import paper_value

TABLE1 = ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10", "AE400-10")
EXTRA = (("FC100-100-10", "P1"), ("FC123-456-10", "P1"), ("FC100-100-10", "P2"), ("CNN", "train"),
         ("MAXOUT", "train"), ("RBF", "train"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--all", action="store_true", help="also the Table 3 models, CNN, MAXOUT and RBF")
    ap.add_argument("--subset", type=int, default=None, help="train on N images instead of all 60,000")
    ap.add_argument("--keep", action="store_true", help="store checkpoints in $BLINDSPOTS_HOME for reuse")
    args = ap.parse_args()
    jobs = [(s, "train") for s in TABLE1] + (list(EXTRA) if args.all else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, training data: "
          f"{'all 60,000' if args.subset is None else args.subset} images")
    print(f"{'model':<16} {'split':<6} {'train err':>9} {'test err':>9} {'paper':>7} {'target':>8} {'wall s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        store = None if args.keep else Path(tmp)
        total = 0.0
        for spec, split in jobs:
            t0 = time.perf_counter()
            tm = train(spec, split=split, train_subset=args.subset, progress=False, store=store, force=not args.keep)
            wall = time.perf_counter() - t0
            total += wall if split == "train" and spec in TABLE1 else 0.0
            paper = paper_value("szegedy2014", "table1", spec, "test_error")
            target = TARGETS.get(spec, "")
            print(f"{spec:<16} {split:<6} {100 * tm.meta['train_error']:8.2f}% {100 * tm.meta['test_error']:8.2f}% "
                  f"{'' if paper is None else f'{100 * paper:6.2f}%':>7} {target:>8} {wall:7.1f}", flush=True)
    print(f"Table 1 zoo total wall time: {total:.1f} s (goal <= 600 s)")


TARGETS = {"FC10(1e-4)": "7.4±1.5", "FC10(1e-2)": "9.4±2", "FC10(1)": "20±5", "FC100-100-10": "<=2.0",
           "FC200-200-10": "<=2.0", "AE400-10": "<=2.5", "CNN": "<=1.2", "MAXOUT": "<=1.3"}

if __name__ == "__main__":
    main()
