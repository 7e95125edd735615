"""Checkpoints as safetensors (weights) + JSON (metadata): never pickled, written atomically,
checked on load against the architecture the spec builds."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError
from ..io import file_digest, home, write_atomic, write_json_atomic
from .spec import ModelSpec, parse_spec
from .zoo import build_model


def models_dir() -> Path:
    return home() / "models"


def checkpoint_name(spec: str | ModelSpec, split: str = "train", seed: int = 0, epochs: int | None = None,
                    train_subset: int | None = None, recipe_key: str | None = None) -> str:
    """File stem that encodes everything that changes the weights:
    FC100-100-10__train__s0[__e5][__n2000][__r<hash of the training recipe>]."""
    s = parse_spec(spec)
    name = f"{s.slug}__{split}__s{seed}"
    if epochs is not None:
        name += f"__e{epochs}"
    if train_subset is not None:
        name += f"__n{train_subset}"
    if recipe_key is not None:
        name += f"__r{recipe_key}"
    return name


def save_checkpoint(stem: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write <stem>.safetensors then <stem>.json, each atomically; the JSON records the weights' sha256."""
    stem = Path(stem)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = stem.with_suffix(".safetensors")
    write_atomic(weights, lambda p: save_file(tensors, str(p)))
    meta = dict(meta, weights_sha256=file_digest(weights, "sha256"), weights_file=weights.name)
    write_json_atomic(stem.with_suffix(".json"), meta)
    return weights


def read_meta(stem: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(stem).with_suffix(".json")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint metadata at {path}; train the model first "
                              "(`blindspots train SPEC ...`).") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); delete it and retrain with --force.") from None
    if not isinstance(meta, dict) or "spec" not in meta:
        raise CheckpointError(f"{path} lacks the 'spec' field; delete it and retrain with --force.")
    return meta


def load_checkpoint(stem: str | os.PathLike[str], spec: str | ModelSpec | None = None,
                    device: str | torch.device = "cpu") -> tuple[nn.Sequential, dict[str, Any]]:
    """Rebuild the model from its spec and load the weights; refuse truncated or mismatched files."""
    stem = Path(stem)
    meta = read_meta(stem)
    stored = parse_spec(meta["spec"])
    wanted = None if spec is None else parse_spec(spec)
    if wanted is not None and wanted != stored:
        raise CheckpointError(f"{stem}.json holds {stored.name}, not {wanted.name}.")
    weights = stem.with_suffix(".safetensors")
    if not weights.exists():
        raise CheckpointError(f"{weights} is missing (its JSON exists); retrain with --force.")
    if not isinstance(meta.get("weights_sha256"), str):
        raise CheckpointError(f"{stem}.json records no weights_sha256, so {weights.name} cannot be checked against "
                              "tampering or truncation; retrain with --force.")
    if file_digest(weights, "sha256") != meta["weights_sha256"]:
        raise CheckpointError(f"{weights} does not match the sha256 recorded in its JSON (truncated or "
                              "replaced); retrain with --force.")
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError / ValueError
        raise CheckpointError(f"{weights} is not a readable safetensors file ({exc}); retrain with --force.") from None
    model = build_model(stored)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        raise CheckpointError(f"{weights} does not fit {stored.name}: expected tensors {expected}, found {got}.")
    model.load_state_dict(tensors)
    return model.to(device).eval(), meta
