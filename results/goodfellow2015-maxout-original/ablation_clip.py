"""§6 ablation (issue 17, deliverable 4): FGSM adversarial training of 240-unit maxout with x + ε·sign(∇ₓJ) clipped to
the pixel box [0, 1] (our default) or left outside it, the one training choice the paper leaves open. Same seed,
same original recipe, same rows and minibatches as the pair's adversarial arm's first phase; a fixed number of
epochs (no early stopping), with validation error, test error and FGSM test error (ε = 0.25, clipped, as every
report measures it) after every epoch. Each arm writes its curve to OUT/ablation_clip_<arm>.json after every
epoch (atomically), so a run cut short keeps what it measured.

    PYTHONPATH=src python results/goodfellow2015-maxout-original/ablation_clip.py --arm noclip --epochs 100 \
        --device cuda --out results/goodfellow2015-maxout-original
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from blindspots.data import load_mnist
from blindspots.experiments.goodfellow2015.common import EPSILON
from blindspots.experiments.goodfellow2015.profiles import PROFILES
from blindspots.experiments.goodfellow2015.training import fgsm_error, split_rows
from blindspots.io import write_text_atomic
from blindspots.models import error_rate, fit
from blindspots.models.train import original_maxout_recipe
from blindspots.training import Objective


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arm", choices=("clip", "noclip"), required=True)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=None, help="stop after the epoch that passes this wall time")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = ap.parse_args()
    train, valid, _ = split_rows(PROFILES["pair"])
    test = load_mnist("test")
    objective = Objective("fgsm", EPSILON, 0.5, clip=args.arm == "clip")
    path = args.out / f"ablation_clip_{args.arm}.json"
    curve: dict[str, list[float]] = {"epoch": [], "valid_error": [], "test_error": [], "fgsm_error": [],
                                     "seconds": []}
    record = {"arm": args.arm, "objective": objective.describe(), "seed": args.seed, "device": args.device,
              "torch": torch.__version__, "recipe": "original maxout (pylearn2 mnist_pi.yaml), first phase only, "
              f"{len(train):,} training rows, a fixed number of epochs", "curve": curve}
    t0 = time.perf_counter()

    def on_epoch(epoch: int, model: torch.nn.Module) -> bool:
        curve["epoch"].append(epoch)
        curve["valid_error"].append(error_rate(model, valid))
        curve["test_error"].append(error_rate(model, test))
        curve["fgsm_error"].append(fgsm_error(model, test.images, test.labels, EPSILON))
        curve["seconds"].append(round(time.perf_counter() - t0, 1))
        write_text_atomic(path, json.dumps(record, indent=1))
        print(f"{args.arm} epoch {epoch}: valid {curve['valid_error'][-1]:.2%} test {curve['test_error'][-1]:.2%} "
              f"FGSM {curve['fgsm_error'][-1]:.1%} ({curve['seconds'][-1]:.0f} s)", flush=True)
        return args.minutes is not None and time.perf_counter() - t0 > 60 * args.minutes

    fit("MAXOUT", train, seed=args.seed, recipe=original_maxout_recipe(args.epochs), objective=objective,
        device=args.device, progress=False, on_epoch=on_epoch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
