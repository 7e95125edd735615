"""Command-line shell over the Python API: `blindspots <command> ...`. Each command group lives in its
own module exposing `register(subparsers)`; errors of the library are printed as one clear line."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import time
from pathlib import Path

from ..errors import BlindspotsError
from .common import check_args

# Modules of this package that each add their subcommands.
COMMAND_MODULES = ("data", "models", "attack", "analysis", "reproduce", "audit", "gc")
# Test hook (tests/test_reliability.py): set, build_parser prints this line to stdout once every command module is
# imported, then sleeps, so a test can send a real Ctrl-C (SIGINT) at a known point instead of guessing when.
PAUSE_HOOK = "BLINDSPOTS_TEST_PAUSE_IN_PARSER"


def build_parser() -> argparse.ArgumentParser:
    """The `blindspots` parser with every command group's subcommands (importing them imports torch: seconds)."""
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
    if os.environ.get(PAUSE_HOOK):
        print(PAUSE_HOOK, flush=True)
        time.sleep(120)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; library errors, I/O errors (a full disk, a file that cannot be read or written) and Ctrl-C
    end it with one line on stderr and a non-zero exit status, never a traceback."""
    try:
        parser = build_parser()  # imports torch (seconds): Ctrl-C may come here too
        args = parser.parse_args(argv)
        check_args(args)
        try:
            return int(args.func(args) or 0)
        except BaseException:
            if getattr(args, "out_created", False):
                remove_if_unused(Path(args.out))
            raise
    except BlindspotsError as exc:
        print(f"blindspots: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("blindspots: interrupted; finished work is saved and a rerun resumes from it.", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"blindspots: error: {io_error_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError":  # safetensors' own error type (reading or writing a file)
            raise
        print(f"blindspots: error: {io_error_line(exc)}", file=sys.stderr)
        return 1


def remove_if_unused(folder: Path) -> None:
    """Remove an output folder a failed command created, if it holds nothing but empty folders and the lock file."""
    from ..stages import LOCK

    try:
        files = [p for p in folder.rglob("*") if not p.is_dir()]
        if any(p.parent != folder or p.name != LOCK for p in files):
            return
        for p in files:
            p.unlink()
        for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            d.rmdir()
        folder.rmdir()
    except OSError:
        pass  # left as it is: a folder that cannot be cleaned is harmless


def io_error_line(exc: Exception) -> str:
    """One line for an error reading or writing a file: what failed, where, and what to do."""
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return (f"no space left to write a file{where}: {exc.strerror}; free some space (or write elsewhere) "
                    "and rerun: finished work is kept and reused.")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"cannot write or read{where}: {exc.strerror}; choose a folder you may write (--out)."
        return f"a file could not be read or written{where}: {exc.strerror or text}."
    if "No space left" in text or "StorageFull" in text or "File too large" in text:
        return ("no space left to write a safetensors file; free some space (or write elsewhere) and rerun: "
                "finished work is kept and reused.")
    return f"a safetensors file could not be read or written: {text}."
