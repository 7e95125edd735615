"""What the Szegedy et al. 2014 sections share: the models they use, the §4.2 ablation's arms, and small hashing and
path helpers. Run sizes are in `profiles`."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from torch import Tensor

from ...models import TrainedModel, train
from ...stages import StageRunner

if TYPE_CHECKING:
    from .profiles import SectionSizes

UNIT_MODELS = ("CNN", "FC100-100-10")
SPECTRAL_MODELS = ("CNN", "FC100-100-10", "FC200-200-10", "FC10(1e-4)")
POOL_SPEC = "FC100-100-10"
ALEXNET_LAYERS = ("Conv.1", "Conv.2", "Conv.3", "Conv.4", "Conv.5", "FC1", "FC2", "FC3")

# adversarial pairs handed to `spectral_section`: an adversarial.safetensors path, its tensors (x, x_adv and
# optionally success / label), or a tuple (x, x_adv[, success])
PairSource = Union[str, "os.PathLike[str]", Mapping[str, Tensor], tuple[Tensor, ...]]


# the ablation arms: the layers whose outputs get a pool of adversarial examples (none: weight decay alone)
ARMS: dict[str, tuple[str, ...]] = {"none": (), "input": ("input",), "hidden": ("act1", "act2"),
                                    "all": ("input", "act1", "act2")}
ARM_TITLES = {"none": "weight decay alone", "input": "+ pool at the input", "hidden": "+ pools at act1, act2",
              "all": "+ pools at input, act1, act2"}
PLAIN, POOLED = "none", "all"  # weight decay alone; the paper's set-up (a pool for every layer)


# ---------------------------------------------------------------------------------------------- helpers

def _trained(spec: str, sizes: SectionSizes, seed: int, device: str, progress: bool,
             store: Path | None) -> TrainedModel:
    cnn = spec == "CNN"
    return train(spec, seed=seed, train_subset=sizes.cnn_train_subset if cnn else sizes.train_subset,
                 epochs=sizes.cnn_epochs if cnn else sizes.epochs, device=device, progress=progress, store=store)


def _rel(runner: StageRunner, path: Path) -> Path:
    return Path(os.path.relpath(path, runner.root))


def _digest(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _spec_name(tm: TrainedModel) -> str:
    return str(tm.meta["spec"])


def _model_key(tm: TrainedModel) -> dict[str, Any]:
    """What identifies a trained model in a stage key: its weights (not where the store keeps them)."""
    m = tm.meta
    return {"spec": m["spec"], "weights_sha256": m["weights_sha256"], "train_subset": m.get("train_subset"),
            "epochs": m.get("epochs")}
