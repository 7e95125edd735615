"""Train-or-reuse: the public entry points `train`, `load_model` and `evaluate` over the checkpoint store."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..data import SPLITS, load_mnist
from ..errors import CheckpointError, SpecError
from ..io import source_hash, stable_hash
from .checkpoint import checkpoint_name, load_checkpoint, models_dir, read_meta, save_checkpoint
from .spec import ModelSpec, parse_spec
from .inference import error_rate
from .train import StoredObjective, default_recipe, fit, recipe_dict

TRAIN_SPLITS = ("train", "P1", "P2")


@dataclass
class TrainedModel:
    """A classifier in eval mode, its metadata (spec, split, seed, recipe, errors, ...) and its files."""

    model: nn.Sequential
    meta: dict[str, Any]
    path: Path

    @property
    def spec(self) -> ModelSpec:
        return parse_spec(self.meta["spec"])


# The source a checkpoint's weights depend on: a change to any of it gives new checkpoint names (a retrain),
# never old weights under a fixed code's name. A training objective (adversarial training) adds its own code.
TRAINING_SOURCE = ("data", "models", "io.py", "errors.py")
# loaders of a user's own models and data, which no zoo checkpoint depends on
TRAINING_SOURCE_EXCLUDE = ("models/external.py", "data/user.py")
OBJECTIVE_SOURCE = ("training", "attacks")


def training_source_hash(objective: StoredObjective | None = None) -> str:
    """Hash of the package source that checkpoints trained with (or without) a training objective depend on."""
    return source_hash(*TRAINING_SOURCE, *(OBJECTIVE_SOURCE if objective is not None else ()),
                       exclude=TRAINING_SOURCE_EXCLUDE)


def _stem(folder: Path, s: ModelSpec, split: str, seed: int, epochs: int | None, train_subset: int | None,
          objective: StoredObjective | None = None) -> Path:
    """Checkpoint path; the name carries a hash of the recipe and of the training code, so a changed recipe or a
    fix to the code never reuses old weights (and, for a training objective other than plain J, its tag:
    MAXOUT__train__s0__r<hash>__fgsm-e0p25-a0p5)."""
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise SpecError(f"epochs must be a whole number >= 1, got {epochs!r}; leave it out for the recipe's own.")
    recipe = default_recipe(s)
    if epochs is not None:
        recipe = replace(recipe, epochs=epochs)
    hashed = recipe_dict(recipe) if objective is None else {**recipe_dict(recipe), "objective": objective.as_dict()}
    key = stable_hash({**hashed, "source": training_source_hash(objective)}, 8)
    if objective is not None:
        key = f"{key}__{objective.slug}"
    return folder / checkpoint_name(s, split, seed, epochs, train_subset, key)


def _check_split(split: str) -> None:
    if split not in TRAIN_SPLITS:
        raise SpecError(f"cannot train on split {split!r}; choose one of {', '.join(TRAIN_SPLITS)} "
                        f"(the data splits are {', '.join(SPLITS)}; 'test' is held out).")


def train(spec: str | ModelSpec, *, split: str = "train", seed: int = 0, epochs: int | None = None,
          train_subset: int | None = None, dataset: str = "mnist", device: str | torch.device = "cpu",
          force: bool = False, progress: bool = True, data_dir: str | None = None,
          store: Path | None = None, objective: StoredObjective | None = None) -> TrainedModel:
    """Train `spec` (or reuse the stored checkpoint made with the same arguments) and save it atomically.

    `objective`: adversarial training or a noise control (training.Objective) instead of plain J."""
    s = parse_spec(spec)
    _check_split(split)
    folder = store or models_dir() / ("" if dataset == "mnist" else dataset)
    stem = _stem(folder, s, split, seed, epochs, train_subset, objective)
    if not force and stem.with_suffix(".json").exists():
        model, meta = load_checkpoint(stem, s, device)
        return TrainedModel(model, meta, stem.with_suffix(".safetensors"))
    data = load_mnist(split, dataset=dataset, subset=train_subset, data_dir=data_dir)
    test = load_mnist("test", dataset=dataset, data_dir=data_dir)
    t0 = time.perf_counter()
    model, recipe = fit(s, data, seed=seed, epochs=epochs, device=device, progress=progress, objective=objective)
    wall = time.perf_counter() - t0
    meta = {
        "spec": s.name, "dataset": dataset, "split": split, "seed": seed, "train_subset": train_subset,
        "epochs": recipe.epochs, "recipe": recipe_dict(recipe),
        "objective": None if objective is None else {**objective.as_dict(), "description": objective.describe()},
        "train_error": error_rate(model, data), "test_error": error_rate(model, test),
        "n_train": len(data), "data_md5": {**data.checksums, **test.checksums},
        "package_version": __version__, "source_sha256": training_source_hash(objective),
        "torch_version": torch.__version__,
        "python": platform.python_version(), "device": str(device), "wall_time_s": round(wall, 2),
    }
    save_checkpoint(stem, model.cpu(), meta)
    return TrainedModel(model.to(device).eval(), read_meta(stem), stem.with_suffix(".safetensors"))


def load_model(spec: str | ModelSpec, *, split: str = "train", seed: int = 0, epochs: int | None = None,
               train_subset: int | None = None, dataset: str = "mnist", device: str | torch.device = "cpu",
               store: Path | None = None, objective: StoredObjective | None = None) -> TrainedModel:
    """The stored model trained with these arguments; a clear error if it was never trained."""
    s = parse_spec(spec)
    _check_split(split)
    folder = store or models_dir() / ("" if dataset == "mnist" else dataset)
    stem = _stem(folder, s, split, seed, epochs, train_subset, objective)
    if not stem.with_suffix(".json").exists():
        raise CheckpointError(f"{s.name} on split {split} (seed {seed}) has not been trained yet; run "
                              f"`blindspots train '{s.name}' --split {split} --seed {seed}` first.")
    model, meta = load_checkpoint(stem, s, device)
    return TrainedModel(model, meta, stem.with_suffix(".safetensors"))


def evaluate(model: nn.Module, *, dataset: str = "mnist", train_split: str = "train",
             train_subset: int | None = None, data_dir: str | None = None) -> dict[str, float]:
    """Train and test error of a model, recomputed from the data (not read from metadata)."""
    tr = load_mnist(train_split, dataset=dataset, subset=train_subset, data_dir=data_dir)
    te = load_mnist("test", dataset=dataset, data_dir=data_dir)
    return {"train_error": error_rate(model, tr), "test_error": error_rate(model, te)}
