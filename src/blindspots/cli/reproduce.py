"""`blindspots reproduce szegedy2014|goodfellow2015`."""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
from pathlib import Path

from ..errors import SpecError
from ..experiments.stages import timing_line
from ..parallel import init_from_env, shutdown
from .common import add_device

EXPERIMENTS = {"szegedy2014": "blindspots.experiments.szegedy2014",
               "goodfellow2015": "blindspots.experiments.goodfellow2015"}
DISTRIBUTED = ("szegedy2014",)  # experiments whose attacks torchrun can split across processes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="reproduce a paper's experiments end to end, with a report",
                       formatter_class=_ProfileHelp)
    p.add_argument("experiment", help=f"one of: {', '.join(EXPERIMENTS)}")
    p.add_argument("--profile", default="standard", help="the run's size (default standard)")
    p.add_argument("--n-attack", type=int, default=None, metavar="N", help="images attacked per model (overrides the profile)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="overrides",
                   help="override one field of the profile, read as its type: e.g. --set seeds=1, --set "
                        "nets=maxout,maxout_adv, --set s42.pool.mix=0.05, --set lbfgs=search_steps=2,max_iter=50 "
                        "(repeatable; the run's facts record the profile it ran)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default runs/<experiment>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (stage lines are still printed)")
    p.add_argument("--publish", default=None, metavar="DIR",
                   help="also copy the report, results.json, its figures and the provenance (command, commit, wall "
                        "time) to DIR, e.g. results/szegedy2014-standard")
    add_device(p)
    p.set_defaults(func=_run)


def profile_help() -> str:
    """--profile's help from each paper's PROFILES (imported only when the help is shown: they import torch)."""
    names = [f"{exp}: {', '.join(importlib.import_module(module).PROFILES)}" for exp, module in EXPERIMENTS.items()]
    return f"the run's size, per experiment ({'; '.join(names)}); default standard; quick runs in minutes"


class _ProfileHelp(argparse.HelpFormatter):
    """Writes --profile's help from the papers' profiles when `reproduce --help` prints it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return profile_help() if action.dest == "profile" else action.help


def _run(args: argparse.Namespace) -> int:
    if args.experiment not in EXPERIMENTS:
        raise SpecError(f"unknown experiment {args.experiment!r}; choose one of {', '.join(EXPERIMENTS)}.")
    try:
        module = importlib.import_module(EXPERIMENTS[args.experiment])
    except ModuleNotFoundError as exc:
        raise SpecError(f"experiment {args.experiment!r} is not available in this version.") from exc
    out = Path(args.out or f"runs/{args.experiment}")
    world = init_from_env(args.device)
    try:
        if world.size > 1 and args.experiment not in DISTRIBUTED:
            raise SpecError(f"{args.experiment} runs in one process; start it without torchrun (torchrun works for "
                            f"{', '.join(DISTRIBUTED)}).")
        if world.is_main:
            print(f"blindspots reproduce {args.experiment} --profile {args.profile} -> {out}"
                  + (f" ({world.size} processes, {world.backend})" if world.size > 1 else ""))
        t0 = time.perf_counter()
        kw: dict[str, object] = {"world": world} if world.size > 1 else {}
        if args.overrides:
            kw["overrides"] = _overrides(args.overrides)
        results = module.reproduce(out, args.profile, seed=args.seed, n_attack=args.n_attack, device=args.device,
                                   progress=not args.no_progress, **kw)
    finally:
        shutdown(world)
    if not world.is_main:
        return 0
    print()
    print(module.terminal_summary(results))
    print(timing_line(results))
    print(f"\nReport: {out / 'report.html'} (also report.md; raw numbers in results.json)")
    if args.publish:
        from ..report.publish import publish

        command = "blindspots " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        dest = publish(out, args.publish, experiment=args.experiment, profile=args.profile, command=command,
                       wall_time_s=time.perf_counter() - t0)
        print(f"Published to {dest}")
    return 0


def _overrides(items: list[str]) -> dict[str, str]:
    """--set FIELD=VALUE pairs, in order (a later one wins)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {item!r}: write FIELD=VALUE, e.g. --set seeds=1.")
        out[key.strip()] = value
    return out
