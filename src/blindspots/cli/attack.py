"""`blindspots attack SPEC --method lbfgs|fgsm|noise --out DIR`: attack a trained model on MNIST images and
write DIR/adversarial.safetensors, DIR/summary.json and DIR/examples.png (Figure 5 layout)."""

from __future__ import annotations

import argparse
import hashlib
import platform
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..attacks import (AttackResult, Misclassification, TargetedMisclassification, fgsm, fgsm_min_epsilon,
                       lbfgs_all_targets, lbfgs_attack, noise_attack, random_targets, save_adversarial)
from ..attacks.base import evaluate
from ..attacks.lbfgs import BACKENDS
from ..data import SPLIT_SEED, load_mnist
from ..errors import InputError
from ..io import file_digest, write_json_atomic
from ..models import load_model
from .common import add_data_dir, add_device, add_model_args, print_json

METHODS = ("lbfgs", "fgsm", "noise")
TARGETS = ("none", "random", "all")
DEFAULT_EPS = (0.1, 0.25)
DEFAULT_SIGMA = (0.1, 0.3)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", conflict_handler="resolve",
                       help="attack a trained model; writes adversarial.safetensors, summary.json, examples.png",
                       description=("Attack a trained model on MNIST images. --split/--seed choose the images "
                                    "and the attack's seed; --model-split/--model-seed choose the model."))
    add_model_args(p)
    # the interface: --split and --seed are about the attack; the model's own are renamed
    p.add_argument("--split", default="test", choices=("test", "train"), help="images to attack (default test)")
    p.add_argument("--seed", type=int, default=0, help="attack seed: random targets and noise (default 0)")
    p.add_argument("--model-split", default="train", help="the model's training split: train, P1 or P2 (default train)")
    p.add_argument("--model-seed", type=int, default=0, help="the model's training seed (default 0)")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--n", type=int, default=100, help="number of images (a fixed seeded subset; default 100)")
    p.add_argument("--eps", type=float, nargs="+", default=None, metavar="E",
                   help=f"fgsm budgets ε (default {' '.join(map(str, DEFAULT_EPS))})")
    p.add_argument("--minimal", action="store_true", help="fgsm: per-image smallest ε by bisection instead")
    p.add_argument("--sigma", type=float, nargs="+", default=None, metavar="S",
                   help=f"noise per-pixel σ (default {' '.join(map(str, DEFAULT_SIGMA))})")
    p.add_argument("--target", default="none", choices=TARGETS,
                   help="none: any wrong label (default); random: a seeded target ≠ label; all: lbfgs towards "
                        "each other label, keeping the smallest perturbation")
    p.add_argument("--backend", default="batched", choices=BACKENDS, help="lbfgs solver (scipy = per-image reference)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per batch (FGSM, default 1000) or in flight at once (L-BFGS, default 128 on CPU)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threads", type=int, default=None, metavar="T",
                   help="torch CPU threads (default: torch's choice); on a busy or shared machine --threads 1 "
                        "can be several times faster")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print summary.json")
    add_device(p)
    add_data_dir(p)
    p.set_defaults(func=_run)


def _criterion(target: str, labels: torch.Tensor, seed: int) -> Misclassification | TargetedMisclassification:
    if target == "random":
        return TargetedMisclassification(random_targets(labels, seed), labels)
    return Misclassification(labels)


def _attack(args: argparse.Namespace, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> AttackResult:
    if args.method != "lbfgs" and args.target == "all":
        raise InputError("--target all is the L-BFGS 'all targets' mode; use --target none or random with "
                         f"--method {args.method}.")
    if args.method != "fgsm" and (args.eps is not None or args.minimal):
        raise InputError("--eps and --minimal belong to --method fgsm.")
    if args.method != "noise" and args.sigma is not None:
        raise InputError("--sigma belongs to --method noise.")
    crit = _criterion(args.target, y, args.seed)
    progress = not args.no_progress
    if args.method == "lbfgs":
        kw = {"backend": args.backend, "batch_size": args.batch_size, "progress": progress}
        if args.target == "all":
            return lbfgs_all_targets(model, x, y, **kw)
        return lbfgs_attack(model, x, crit, **kw)
    if args.method == "fgsm":
        batch = {} if args.batch_size is None else {"batch_size": args.batch_size}
        if args.minimal:
            return fgsm_min_epsilon(model, x, crit, **batch)
        return fgsm(model, x, crit, args.eps or DEFAULT_EPS, **batch)
    return noise_attack(model, x, crit, args.sigma or DEFAULT_SIGMA, seed=args.seed)


def _run(args: argparse.Namespace) -> int:
    from ..report.figures import examples_grid

    if args.n < 1:
        raise InputError(f"--n must be at least 1, got {args.n}.")
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be at least 1, got {args.threads}.")
        torch.set_num_threads(args.threads)
    tm = load_model(args.spec, split=args.model_split, seed=args.model_seed, epochs=args.epochs,
                    train_subset=args.train_subset, dataset=args.dataset, device=args.device)
    data = load_mnist(args.split, dataset=args.dataset, subset=args.n, data_dir=args.data_dir)
    device = torch.device(args.device)
    x, y = data.images.to(device), data.labels.to(device)
    result = _attack(args, tm.model, x, y)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    adv_path = save_adversarial(out / "adversarial.safetensors", result)
    clean_pred = evaluate(tm.model, x, Misclassification(y))[1]
    summary: dict[str, Any] = {
        "command": "attack", "method": args.method, "target": args.target, "seed": args.seed,
        "model": {"spec": tm.meta["spec"], "split": args.model_split, "seed": args.model_seed,
                  "checkpoint": str(tm.path), "weights_sha256": tm.meta.get("weights_sha256"),
                  "test_error": tm.meta.get("test_error")},
        "data": {"dataset": args.dataset, "split": args.split, "n": len(data), "subset_seed": SPLIT_SEED,
                 "indices_sha256": hashlib.sha256(data.indices.astype("int64").tobytes()).hexdigest()},
        "params": result.params, "clean_error_rate": float((clean_pred != y).float().mean()),
        "clean_errors_counted": "images the model already gets wrong are attacked like any other; for an "
                                "untargeted criterion they are successes at distortion 0",
        **result.summary(),
        "files": {"adversarial.safetensors": file_digest(adv_path, "sha256")},
        "versions": {"blindspots": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    write_json_atomic(out / "summary.json", summary)

    x_show, k = (result.x_adv[-1], len(result.budgets or ())) if result.is_fixed_budget else (result.x_adv, 0)
    ok = result.success[-1] if result.is_fixed_budget else result.success
    pred = result.pred[-1] if result.is_fixed_budget else result.pred
    order = torch.cat([ok.nonzero().flatten(), (~ok).nonzero().flatten()])[:10].cpu()
    what = f"{result.attack} at {result.budgets[-1]:g}" if k and result.budgets else result.attack
    examples_grid(result.x.cpu()[order], x_show.cpu()[order], result.labels.cpu()[order], pred.cpu()[order],
                  out / "examples.png", title=f"{tm.meta['spec']}: {what}")

    if args.json:
        print_json(summary)
    else:
        rate = summary["success_rate"]
        rates = ", ".join(f"{r:.1%}" for r in rate) if isinstance(rate, list) else f"{rate:.1%}"
        print(f"{tm.meta['spec']} {result.attack} on {len(data)} {args.split} images: success {rates}, "
              f"{result.wall_time:.1f} s -> {out}")
    return 0
