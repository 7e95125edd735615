"""`blindspots attack SPEC --method NAME --out DIR`: attack a trained model on MNIST images with any attack of
the registry (attacks.ATTACKS) and write DIR/adversarial.safetensors, DIR/summary.json and DIR/examples.png
(Figure 5 layout)."""

from __future__ import annotations

import argparse
import hashlib
import platform
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..attacks import (ATTACKS, AttackResult, Misclassification, TargetedMisclassification, get_attack, random_targets,
                       save_adversarial)
from ..attacks.lbfgs import BACKENDS
from ..data import SPLIT_SEED, load_mnist
from ..errors import InputError
from ..stages import holding_output
from ..io import file_digest, write_json_atomic
from ..models import load_model, predict_logits
from .common import add_data_dir, add_device, add_model_args, add_threads, print_json, set_threads

TARGETS = ("none", "random", "all")
DEFAULT_BUDGETS = {"epsilons": (0.1, 0.25), "sigmas": (0.1, 0.3)}
BUDGET_FLAGS = {"epsilons": "eps", "sigmas": "sigma"}
ALL_TARGETS = {"lbfgs": "lbfgs-all-targets"}  # --target all: the method's variant that tries every label
MINIMAL = {"fgsm": "fgsm-min"}  # --minimal: the method's per-image smallest-budget variant


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
    p.add_argument("--method", required=True, choices=list(ATTACKS),
                   help="; ".join(f"{k}: {v.description}" for k, v in ATTACKS.items()))
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any parameter of the attack, repeatable (e.g. --param steps=100 --param norm=l2); "
                        "`python -c 'from blindspots.attacks import ATTACKS; print(ATTACKS[\"pgd\"].params)'` "
                        "lists them")
    p.add_argument("--n", type=int, default=100, help="number of images (a fixed seeded subset; default 100)")
    p.add_argument("--eps", type=float, nargs="+", default=None, metavar="E",
                   help="budgets ε of fgsm or pgd (default 0.1 0.25)")
    p.add_argument("--minimal", action="store_true", help="fgsm: per-image smallest ε by bisection instead")
    p.add_argument("--sigma", type=float, nargs="+", default=None, metavar="S",
                   help="noise per-pixel σ (default 0.1 0.3)")
    p.add_argument("--target", default="none", choices=TARGETS,
                   help="none: any wrong label (default); random: a seeded target ≠ label; all: lbfgs towards "
                        "each other label, keeping the smallest perturbation")
    p.add_argument("--backend", default=None, choices=BACKENDS, help="lbfgs solver (scipy = per-image reference)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per batch (FGSM, default 1000) or in flight at once (L-BFGS, default 128 on CPU)")
    p.add_argument("--out", required=True, help="output folder")
    add_threads(p)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print summary.json")
    add_device(p)
    add_data_dir(p)
    p.set_defaults(func=_run)


def _value(text: str) -> Any:
    """A --param value: int, float, true/false/none, else the string itself."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _attack(args: argparse.Namespace, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
            n_classes: int) -> AttackResult:
    name = args.method
    if args.target == "all":
        if name not in ALL_TARGETS:
            raise InputError(f"--target all is the L-BFGS 'all targets' mode; use --target none or random with "
                             f"--method {name}.")
        name = ALL_TARGETS[name]
    if args.minimal:
        if name not in MINIMAL:
            raise InputError(f"--minimal belongs to --method {', '.join(MINIMAL)}.")
        name = MINIMAL[name]
    spec = get_attack(name)
    budgets = None
    for kind, flag in BUDGET_FLAGS.items():
        given = getattr(args, flag)
        if given is not None and spec.budgets != kind:
            raise InputError(f"--{flag} belongs to --method "
                             f"{', '.join(k for k, v in ATTACKS.items() if v.budgets == kind)}.")
        if spec.budgets == kind:
            budgets = given or DEFAULT_BUDGETS[kind]
    params: dict[str, Any] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--param takes KEY=VALUE, got {item!r}.")
        params[key.strip().replace("-", "_")] = _value(value)
    flags = {"backend": args.backend, "batch_size": args.batch_size}
    for key, value in flags.items():
        if value is not None:
            if key not in spec.params:
                raise InputError(f"--{key.replace('_', '-')} is not a parameter of --method {args.method}.")
            params[key] = value
    for key, value in (("progress", not args.no_progress), ("seed", args.seed)):
        if key in spec.params:
            params.setdefault(key, value)
    if args.target == "random":
        crit: Misclassification | TargetedMisclassification = TargetedMisclassification(
            random_targets(y, args.seed, n_classes), y)
    else:
        crit = Misclassification(y)
    return spec(model, x, crit, budgets, **params)


def _run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise InputError(f"--n must be at least 1, got {args.n}.")
    if args.epochs is not None and args.epochs < 1:
        raise InputError(f"--epochs must be at least 1, got {args.epochs}; omit it to use the recipe's epochs.")
    set_threads(args.threads)
    with holding_output(args.out) as out:  # the lock reproduce takes; a folder this made is removed if this fails
        summary, line = _attack_into(args, out)
    if args.json:
        print_json(summary)
    else:
        print(line)
    return 0


def _attack_into(args: argparse.Namespace, out: Path) -> tuple[dict[str, Any], str]:
    """Attack, write the files into `out`; returns summary.json's content and the line to print."""
    from ..report.figures import examples_grid

    tm = load_model(args.spec, split=args.model_split, seed=args.model_seed, epochs=args.epochs,
                    train_subset=args.train_subset, dataset=args.dataset, device=args.device)
    data = load_mnist(args.split, dataset=args.dataset, subset=args.n, data_dir=args.data_dir)
    device = torch.device(args.device)
    x, y = data.images.to(device), data.labels.to(device)
    result = _attack(args, tm.model, x, y, n_classes=int(predict_logits(tm.model, x[:1]).shape[1]))

    adv_path = save_adversarial(out / "adversarial.safetensors", result)
    assert result.clean_error is not None
    summary: dict[str, Any] = {
        "command": "attack", "method": args.method, "target": args.target, "seed": args.seed,
        "model": {"spec": tm.meta["spec"], "split": args.model_split, "seed": args.model_seed,
                  "checkpoint": str(tm.path), "weights_sha256": tm.meta.get("weights_sha256"),
                  "test_error": tm.meta.get("test_error")},
        "data": {"dataset": args.dataset, "split": args.split, "n": len(data), "subset_seed": SPLIT_SEED,
                 "indices_sha256": hashlib.sha256(data.indices.astype("int64").tobytes()).hexdigest()},
        "params": result.params, "clean_error_rate": float(result.clean_error.float().mean()),
        "clean_errors_counted": "images the model already gets wrong are attacked like any other and flagged "
                                "(clean_error); the distortion statistics leave them out",
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

    rate = summary["success_rate"]
    rates = ", ".join(f"{r:.1%}" for r in rate) if isinstance(rate, list) else f"{rate:.1%}"
    return summary, (f"{tm.meta['spec']} {result.attack} on {len(data)} {args.split} images: success {rates}, "
                     f"{result.wall_time:.1f} s -> {out}")
