"""A recipe search for Szegedy et al.'s sigmoid MLPs (Table 1, and §4.2's control arm) that cannot peek at the test set.

The paper leaves open the optimiser, momentum, learning rate and schedule, epochs, batch size and the form of the
weight decay. This script tries configurations of those choices on FC100-100-10 (and FC200-200-10), each trained
on the first 50,000 rows of the training file and scored on the last 10,000 (validation); the test set is read
only in the `final` phase, for the finalists (the best `--finalists` configurations by validation error), each
trained on all 60,000 rows over three seeds. Every result is appended to one JSON file (written atomically), so a
killed search resumes where it was; the table of every configuration tried is printed at the end.

    OMP_NUM_THREADS=1 python benchmarks/search_mlp_recipe.py --out runs/mlp-search --phase search
    OMP_NUM_THREADS=1 python benchmarks/search_mlp_recipe.py --out runs/mlp-search --phase final
    python benchmarks/search_mlp_recipe.py --out runs/mlp-search --phase table

Targets (issue "Szegedy §4.2 and Table 1 on a control that matches the paper"), mean test error over 3 seeds:
FC100-100-10 ≤ 1.70%, FC200-200-10 ≤ 1.60% (paper 1.64%, 1.54%).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from blindspots.data import ImageSet, load_mnist
from blindspots.io import write_json_atomic
from blindspots.models import error_rate, fit
from blindspots.models.train import default_recipe

TRAIN_ROWS = 50_000
TARGETS = {"FC100-100-10": 0.0170, "FC200-200-10": 0.0160}

# the configurations: overrides of the zoo's current recipe (SGD + Nesterov 0.9, lr 0.2 cosine, batch 64, 40 epochs,
# λ = 3e-5 in (λ/2)·‖W‖²), one choice at a time and a few combinations
CONFIGS: dict[str, dict[str, Any]] = {
    "current": {},
    "wd1e-5": {"weight_decay": 1e-5},
    "wd1e-4": {"weight_decay": 1e-4},
    "wd3e-4": {"weight_decay": 3e-4},
    "ep80": {"epochs": 80},
    "ep80-wd1e-4": {"epochs": 80, "weight_decay": 1e-4},
    "lr0.1": {"lr": 0.1},
    "lr0.05": {"lr": 0.05},
    "b128-lr0.4": {"batch_size": 128, "lr": 0.4},
    "b32-lr0.1": {"batch_size": 32, "lr": 0.1},
    "m0.95-lr0.1": {"momentum": 0.95, "lr": 0.1},
    "sgd-nomomentum-lr1": {"momentum": 0.0, "nesterov": False, "lr": 1.0},
    "layer_mean0.1": {"decay_form": "layer_mean", "weight_decay": 0.1},
    "layer_mean1": {"decay_form": "layer_mean", "weight_decay": 1.0},
    "exp0.95-ep80": {"lr_decay": 0.95, "lr_floor": 1e-4, "epochs": 80},
    "ep80-wd1e-4-b128-lr0.4": {"epochs": 80, "weight_decay": 1e-4, "batch_size": 128, "lr": 0.4},
}


def split(full: ImageSet, rows: slice, name: str) -> ImageSet:
    """Rows of the training file in file order (the validation rows are the last 10,000, as in the maxout protocol)."""
    order = torch.as_tensor(full.indices).argsort()[rows]
    return ImageSet(full.images[order], full.labels[order], full.dataset, name, full.indices[order.numpy()],
                    full.checksums)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def run_one(spec: str, config: str, seed: int, phase: str) -> dict[str, Any]:
    """Train `spec` with the configuration's recipe; search: on rows 0-49,999, scored on the validation rows;
    final: on all 60,000, scored on the test set."""
    full = load_mnist("train")
    recipe = replace(default_recipe(spec), **CONFIGS[config])
    data = split(full, slice(0, TRAIN_ROWS), "train[:50000]") if phase == "search" else full
    t0 = time.perf_counter()
    model, _ = fit(spec, data, seed=seed, recipe=recipe, progress=False)
    out = {"spec": spec, "config": config, "seed": seed, "phase": phase, "train_error": error_rate(model, data),
           "wall_s": round(time.perf_counter() - t0, 1), "threads": torch.get_num_threads()}
    if phase == "search":
        out["valid_error"] = error_rate(model, split(full, slice(TRAIN_ROWS, None), "train[50000:]"))
    else:
        out["test_error"] = error_rate(model, load_mnist("test"))
    return out


def finalists(results: dict[str, Any], spec: str, k: int) -> list[str]:
    """The k configurations with the lowest validation error for `spec` (ties: the order of CONFIGS)."""
    scored = [(r["valid_error"], list(CONFIGS).index(r["config"]), r["config"]) for r in results.values()
              if r["spec"] == spec and r["phase"] == "search"]
    return [c for _, _, c in sorted(scored)[:k]]


def pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f}%"


def table(results: dict[str, Any]) -> str:
    """Every configuration tried: validation error (search) and test error per seed and mean (final)."""
    lines = ["| model | configuration | overrides | train err. (search) | valid. err. | test err. per seed (final) | "
             "mean test | target | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for spec in TARGETS:
        for config in CONFIGS:
            s = results.get(f"{spec}|{config}|0|search")
            finals = [r for r in results.values() if r["spec"] == spec and r["config"] == config
                      and r["phase"] == "final"]
            if s is None and not finals:
                continue
            tests = [r["test_error"] for r in sorted(finals, key=lambda r: r["seed"])]
            mean = statistics.mean(tests) if tests else None
            met = " met" if mean is not None and len(tests) >= 3 and mean <= TARGETS[spec] else ""
            wall = sum(r["wall_s"] for r in finals) + (s["wall_s"] if s else 0)
            lines.append(f"| {spec} | {config} | {json.dumps(CONFIGS[config])} | {pct(s and s['train_error'])} | "
                         f"{pct(s and s['valid_error'])} | {', '.join(pct(t) for t in tests)} | {pct(mean)} | "
                         f"≤ {pct(TARGETS[spec])}{met} | {wall:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder of the resumable results file")
    ap.add_argument("--phase", choices=("search", "final", "table"), required=True)
    ap.add_argument("--models", default="FC100-100-10", help="comma-separated: FC100-100-10,FC200-200-10")
    ap.add_argument("--configs", default=None, help="comma-separated subset of the configurations (search)")
    ap.add_argument("--finalists", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    path = args.out / "results.json"
    args.out.mkdir(parents=True, exist_ok=True)
    results = load(path)
    if args.phase != "table":
        for spec in args.models.split(","):
            if spec not in TARGETS:
                raise SystemExit(f"unknown model {spec!r}; choose from {', '.join(TARGETS)}.")
            if args.phase == "search":
                todo = [(c, 0) for c in (args.configs.split(",") if args.configs else CONFIGS)]
            else:
                todo = [(c, s) for c in finalists(results, spec, args.finalists) for s in range(args.seeds)]
            for config, seed in todo:
                key = f"{spec}|{config}|{seed}|{args.phase}"
                if key in results:
                    continue
                r = run_one(spec, config, seed, args.phase)
                results = load(path) | {key: r}  # another process may have added rows meanwhile
                write_json_atomic(path, results)
                score = r.get("valid_error", r.get("test_error"))
                print(f"{key}: train {r['train_error']:.2%}, {'valid' if args.phase == 'search' else 'test'} "
                      f"{score:.2%} ({r['wall_s']:.0f} s)", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
