"""Options shared by several commands."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from ..errors import DeviceError, InputError, SpecError
from ..io import output_folder


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """"0.1307" or "0.49,0.48,0.45" as finite floats, for --bounds/--mean/--std/--eps-*; a clear error otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts) or not all(parts):
        raise InputError(f"{what} {text!r}: an empty entry; give comma-separated numbers, e.g. {what} 0.1,0.3.")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise InputError(f"{what} {text!r}: {part!r} is not a number; give comma-separated numbers, "
                             f"e.g. {what} 0.1,0.3.") from None
        if not math.isfinite(value):
            raise InputError(f"{what} {text!r}: {part} is not finite; give finite numbers.")
        values.append(value)
    return tuple(values)


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="T",
                   help="torch CPU threads (default: torch's choice); on a busy or shared machine --threads 1 "
                        "can be several times faster")


def set_threads(threads: int | None) -> None:
    """torch.set_num_threads(--threads) when given; a clear error below 1 (torch would fail or ignore it)."""
    if threads is None:
        return
    if threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}.")
    import torch

    torch.set_num_threads(threads)


def check_device(name: str) -> str:
    """`name` if torch can run models on such a device here, else a DeviceError naming what exists; on CUDA it also
    turns TF32 off (full float32, as minimal attacks need)."""
    import torch

    fix = "use --device cpu" + (" or --device cuda" if torch.cuda.is_available() else "")
    if not name.strip():
        raise DeviceError(f"--device is empty; {fix}.")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"--device {name!r} is not a torch device; {fix}.") from None
    if device.type == "cpu":
        return name
    if device.type == "meta":
        raise DeviceError(f"--device {name!r} holds no data (torch's meta device), so no model can run on it; {fix}.")
    backend = getattr(torch, device.type, None)
    if device.type == "mps":
        backend = torch.backends.mps
    available = bool(backend is not None and hasattr(backend, "is_available") and backend.is_available())
    if not available:
        raise DeviceError(f"--device {name!r}: no {device.type} device is available here (torch {torch.__version__}); "
                          f"{fix}.")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if device.index is not None and device.index >= count:
        raise DeviceError(f"--device {name!r}: only {count} {device.type} device(s) here (0..{count - 1}); {fix}.")
    if device.type == "cuda":
        # cuDNN runs float32 convolutions in TF32 by default (about 1e-3 relative): too coarse for minimal attacks,
        # whose examples sit within a few float32 steps of the boundary and are re-verified by a fresh pass
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return name


def check_args(args: argparse.Namespace) -> None:
    """Refuse, before any work starts, option values that would fail later with a traceback: a device that does
    not exist here, a number of epochs below 1, an output folder that is empty, a file, or not writable."""
    if getattr(args, "device", None) is not None:
        args.device = check_device(args.device)
    epochs = getattr(args, "epochs", None)
    if epochs is not None and epochs < 1:
        raise SpecError(f"--epochs must be at least 1, got {epochs}; leave it out for the recipe's own.")
    if getattr(args, "out", None) is not None:
        existed = Path(args.out).is_dir()
        output_folder(args.out, "--out")
        args.out_created = not existed  # main removes it again if the command fails before writing into it


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="folder with your own IDX files (raw or .gz); default: $BLINDSPOTS_DATA or the cache")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="model spec, e.g. 'FC10(1e-4)', FC100-100-10, AE400-10, CNN (see `blindspots models`)")
    p.add_argument("--split", default="train", help="training split: train (all 60k), P1 or P2 (default train)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's number of epochs")
    p.add_argument("--train-subset", type=int, default=None, metavar="N",
                   help="train on a fixed seeded subset of N images (quick runs)")
    p.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"))


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
