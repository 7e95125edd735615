"""Adversarial sets on disk: one safetensors file per result, written atomically, with the attack's
name and parameters in the file's metadata so every reported number can be traced and recomputed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..errors import CheckpointError
from ..io import write_atomic
from .base import AttackResult

REQUIRED = ("x", "x_adv", "label", "target", "success", "distortion", "pred")


def save_adversarial(path: str | os.PathLike[str], result: AttackResult) -> Path:
    """Write result.to_tensors() (x, x_adv, label, target (−1 untargeted), success, distortion (RMS), pred,
    and budgets for a fixed-budget result) to `path` atomically."""
    tensors = result.to_tensors()
    meta = {"attack": result.attack, "params": json.dumps(result.params, sort_keys=True, default=str),
            "wall_time": f"{result.wall_time:.6f}",
            "budgets": json.dumps(list(result.budgets) if result.budgets is not None else None)}
    return write_atomic(path, lambda p: save_file(tensors, str(p), metadata=meta))


def load_adversarial(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The tensors of a saved adversarial set; a clear error if the file is missing or not one."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no adversarial set at {path}; create one with `blindspots attack ... --out DIR`.")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); re-run the attack.") from None
    missing = [k for k in REQUIRED if k not in tensors]
    if missing:
        raise CheckpointError(f"{path} lacks tensors {', '.join(missing)}; it is not an adversarial set "
                              f"written by save_adversarial.")
    return tensors


def load_adversarial_metadata(path: str | os.PathLike[str]) -> dict[str, object]:
    """The attack name, parameters, wall time and budgets stored beside the tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    out: dict[str, object] = dict(meta)
    for key in ("params", "budgets"):
        if key in meta:
            out[key] = json.loads(meta[key])
    return out
