"""Shared pieces of the Szegedy et al. 2014 sections: run sizes (SectionSizes / SIZES), the models they use, and
small formatting and hashing helpers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

from torch import Tensor

from ...errors import SpecError
from ...models import TrainedModel, train
from ...stages import StageRunner

UNIT_MODELS = ("CNN", "FC100-100-10")
SPECTRAL_MODELS = ("CNN", "FC100-100-10", "FC200-200-10", "FC10(1e-4)")
POOL_SPEC = "FC100-100-10"
ALEXNET_LAYERS = ("Conv.1", "Conv.2", "Conv.3", "Conv.4", "Conv.5", "FC1", "FC2", "FC3")

# adversarial pairs handed to `spectral_section`: an adversarial.safetensors path, its tensors (x, x_adv and
# optionally success / label), or a tuple (x, x_adv[, success])
PairSource = Union[str, "os.PathLike[str]", Mapping[str, Tensor], tuple[Tensor, ...]]


@dataclass(frozen=True)
class SectionSizes:
    """How big the three sections run. `train_subset` / `epochs` are those of the FC models shared with Table 1
    (pass the profile's to reuse its checkpoints); None means all 60,000 images / the recipe's epochs.

    Presets in SIZES: "quick" (CI: small subsets, 20 directions, 30 pairs), "standard" (full-data CNN and FC
    nets, 100 directions over all 10,000 test images, 100 CNN pairs) and "paper" (as standard, with 1,000 CNN
    pairs and L-BFGS's full c search). §4.2 has its own presets (adv_training.POOL_SIZES)."""

    name: str
    train_subset: int | None
    epochs: int | None
    cnn_train_subset: int | None
    cnn_epochs: int | None
    unit_images: int | None  # §3: test images searched for the top-k (None: all 10,000)
    n_directions: int  # §3: units and random directions per layer
    n_pairs: int  # §4.3: test images attacked per model that gets no pairs handed in
    lbfgs: dict[str, Any] = field(default_factory=dict)  # minimal attack for §4.3 pairs


SIZES: dict[str, SectionSizes] = {
    "quick": SectionSizes("quick", train_subset=5000, epochs=10, cnn_train_subset=3000, cnn_epochs=2,
                          unit_images=2000, n_directions=20, n_pairs=30,
                          lbfgs={"search_steps": 4, "max_iter": 50}),
    "standard": SectionSizes("standard", train_subset=None, epochs=None, cnn_train_subset=None, cnn_epochs=None,
                             unit_images=None, n_directions=100, n_pairs=100,
                             lbfgs={"search_steps": 6}),
}
# the paper's scale for §3 and §4.3: every unit of each analysed layer (100 wide) over all 10,000 test images, 1,000
# CNN pairs attacked with the full L-BFGS search (the Table 1 models' pairs are every correctly classified test
# image)
SIZES["paper"] = replace(SIZES["standard"], name="paper", n_directions=100, n_pairs=1000, lbfgs={})


def sizes_for(profile: str, *, train_subset: int | None = None, epochs: int | None = None) -> SectionSizes:
    """The §3/§4.3 preset of a `reproduce` profile ("full" runs as "standard"), with the FC models and the CNN
    trained on that profile's data, so the store's Table 1 checkpoints are reused. An unknown name is an error."""
    key = "standard" if profile == "full" else profile
    if key not in SIZES:
        raise SpecError(f"no §3/§4.3 preset for profile {profile!r}; choose one of {', '.join(SIZES)} or 'full'.")
    return replace(SIZES[key], name=profile, train_subset=train_subset, epochs=epochs, cnn_train_subset=train_subset)


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


