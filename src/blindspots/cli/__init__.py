"""Command-line shell over the Python API: `blindspots <command> ...`. Each command group lives in its
own module exposing `register(subparsers)`; errors of the library are printed as one clear line."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import BlindspotsError
from .common import check_args

# Modules of this package that each add their subcommands.
COMMAND_MODULES = ("data", "models", "attack", "analysis", "reproduce", "audit")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="blindspots", description=(
        "Find and measure the blind spots of neural networks; reproduce Szegedy et al. 2014 and "
        "Goodfellow et al. 2015 on real MNIST."))
    parser.add_argument("--version", action="version", version=f"blindspots {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # command group not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_args(args)
        return int(args.func(args) or 0)
    except BlindspotsError as exc:
        print(f"blindspots: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("blindspots: interrupted; finished work is saved and a rerun resumes from it.", file=sys.stderr)
        return 130
