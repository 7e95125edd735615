"""`blindspots audit --model TARGET [--weights FILE] ... --out DIR`: the robustness report of one or more models in
one command (report.md, report.html, results.json; resumable; `torchrun --nproc-per-node K -m blindspots audit`
splits the images across K processes with the same numbers)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InputError
from .common import add_device, add_threads, parse_floats, set_threads

EPILOG = """examples:
  blindspots audit --model CNN --model FC100-100-10 --out runs/audit
  blindspots audit --model mynets:small_cnn --weights small_cnn.safetensors --mean 0.1307 --std 0.3081
  torchrun --nproc-per-node 2 -m blindspots audit --model CNN --images 1000 --out runs/audit"""


class _ModelAction(argparse.Action):
    """--model appends [target, None]; --weights fills in the weights of the --model just before it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any,
                 option: str | None = None) -> None:
        models = list(getattr(namespace, "models", None) or [])
        if option == "--model":
            models.append([value, None])
        else:
            if not models:
                parser.error("--weights must follow the --model it belongs to, e.g. --model mynets:cnn --weights "
                             "cnn.safetensors")
            if models[-1][1] is not None:
                parser.error(f"--model {models[-1][0]} already has --weights {models[-1][1]}; give each --model "
                             "at most one --weights")
            models[-1][1] = value
        namespace.models = models


def register(sub: argparse._SubParsersAction) -> None:
    from ..audit.config import DEFAULT_EPS_L2, DEFAULT_EPS_LINF

    p = sub.add_parser("audit", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                       help="robustness report of your model(s): minimal perturbations, robust accuracy, transfer, "
                            "Lipschitz bounds, sanity checks",
                       description="Audit one or more models on labelled images: clean accuracy, minimal L2/L∞ "
                                   "perturbations, robust accuracy against ε, transfer, Lipschitz bounds and "
                                   "certified radii, single units vs random directions, and PASS/FLAG sanity checks "
                                   "of the attacks. Writes OUT/report.md, report.html and results.json; a rerun "
                                   "reuses finished stages.")
    p.add_argument("--model", dest="models", action=_ModelAction, required=True, metavar="TARGET",
                   help="a zoo spec (CNN, FC100-100-10, ...; trained or loaded from the store) or an import target "
                        "package.module:factory / path/to/file.py:factory; repeatable")
    p.add_argument("--weights", dest="models", action=_ModelAction, metavar="FILE",
                   help=".safetensors weights of the --model just before it (never a pickle)")
    p.add_argument("--data", default="mnist", help="mnist (default), fashion-mnist, a folder of IDX files or an .npz "
                                                   "with x (N, C, H, W) and y")
    p.add_argument("--split", default="test", help="split of a built-in dataset (default test)")
    p.add_argument("--n", "--images", dest="n", type=int, default=1000,
                   help="images to audit (a fixed seeded subset; default 1000); under torchrun write --images, "
                        "which torchrun's own options do not swallow")
    p.add_argument("--bounds", default="0,1", metavar="LO,HI", help="value range of the images (default 0,1)")
    p.add_argument("--mean", default=None, help="normalisation the model expects, one value or one per channel "
                                                "(with --std): the model is wrapped so attacks work on raw images")
    p.add_argument("--std", default=None)
    p.add_argument("--eps-linf", default=None, metavar="E,...",
                   help=f"L∞ budgets (default {','.join(f'{e:g}' for e in DEFAULT_EPS_LINF)} × (hi − lo))")
    p.add_argument("--eps-l2", default=None, metavar="E,...",
                   help=f"L2 budgets (default {','.join(f'{e:g}' for e in DEFAULT_EPS_L2)} × (hi − lo))")
    p.add_argument("--layer", default=None, help="layer for single units vs random directions (default: the last "
                                                 "fully connected hidden layer)")
    p.add_argument("--zoo", default="", metavar="SPEC,...",
                   help="zoo models added as transfer targets, e.g. FC100-100-10,CNN (MNIST-shaped data; off by default)")
    p.add_argument("--bpda", action="append", default=[], metavar="LAYER",
                   help="attack through BPDA of this layer (a name from model.named_modules(), e.g. a quantiser "
                        "or an encoder): a small differentiable stand-in fitted to it carries the gradient; "
                        "repeatable. Rounding calls, zero-gradient layers and graph cuts the gradient probe finds "
                        "are handled without it")
    p.add_argument("--fast", action="store_true",
                   help="run L-BFGS, the PGD bisection and the sanity runs on the first images only (the report "
                        "says which attacks ran on how many images); default: every attack on every image")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--out", default="runs/audit", help="output folder (default runs/audit)")
    add_threads(p)
    p.add_argument("--no-progress", action="store_true")
    add_device(p)
    p.set_defaults(func=_run)


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    """parse_floats of an option's text (None: the option was not given)."""
    return None if text is None else parse_floats(text, what)


def _run(args: argparse.Namespace) -> int:
    from ..audit import AuditConfig, run_audit
    from ..parallel import init_from_env, shutdown

    set_threads(args.threads)
    bounds = _floats(args.bounds, "--bounds")
    if bounds is None or len(bounds) != 2:
        raise InputError(f"--bounds takes two numbers LO,HI, e.g. 0,1; got {args.bounds!r}.")
    config = AuditConfig(
        models=[(target, weights) for target, weights in args.models], data=args.data, split=args.split, n=args.n,
        bounds=(bounds[0], bounds[1]), mean=_floats(args.mean, "--mean"), std=_floats(args.std, "--std"),
        eps_linf=_floats(args.eps_linf, "--eps-linf"), eps_l2=_floats(args.eps_l2, "--eps-l2"), layer=args.layer,
        zoo=tuple(s.strip() for s in args.zoo.split(",") if s.strip()), seed=args.seed, device=args.device,
        out=Path(args.out), progress=not args.no_progress, bpda=tuple(args.bpda), fast=args.fast)
    world = init_from_env(args.device)  # run_audit finds this process group; torn down here, as reproduce does
    try:
        results = run_audit(config)
    finally:
        shutdown(world)
    if not world.is_main:
        return 0
    for s in results["sanity"]:
        if s["status"] == "FLAG":
            print(f"  {s['line']}")
    return 0
