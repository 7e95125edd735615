"""Every run size of `reproduce szegedy2014`: the profiles (`Profile`, `PROFILES`; which PARTS run) and the sizes each
carries for its sections: §3 and §4.3 (`SectionSizes`, presets in SIZES, `sizes_for`), §4.2 (`PoolSizes`, presets in
POOL_SIZES, `pool_sizes`) and "How minimal is minimal?" (`MinimalSizes`, presets in MINIMAL_SIZES, `minimal_sizes`).
Tables 1-3 take theirs from the profile itself (training data, attacked images, the L-BFGS budget)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ...errors import SpecError
from ...training.pool import PoolConfig
from .common import ARMS, PLAIN, POOLED

# ---------------------------------------------------------------------------------------------- §3 and §4.3

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



# ---------------------------------------------------------------------------------------------- §4.2

# The pool recipe of every arm (its layers are the arm's), chosen on a validation split (FC100-100-10 trained on the
# first 10,000 training images for 20 epochs, measured on the last 10,000; never on the test set). Validation error,
# weight decay alone 4.40% (seed 0) / 4.24% (seed 1): input pool with 0.1 pool examples per clean one 4.07% / 3.92%;
# 0.05: 3.89% (seed 0 only; measured after the profile runs had started); 0.25 (the former default) raised it
# (20,000 images: 3.50% vs 3.12%); hidden-layer pools raised it at every setting tried (act1+act2 0.25: 6.13%, 0.1:
# 5.31%, from mid-training on: 5.52%; all layers 0.1: 5.11%, from mid-training on: 6.18%). README: §4.2 notes.
DEFAULT_POOL = PoolConfig()


@dataclass(frozen=True)
class PoolSizes:
    """How big §4.2 runs: training images and epochs of every net (None: all 60,000 / the FC recipe's 40), seeds
    (seed, seed + 1, ...), the ablation arms (keys of ARMS), the pool recipe, the final robustness evaluation
    (`n_robust` test images, L-BFGS options `lbfgs`) and the learning curves (every `curve_every` epochs:
    clean and FGSM error on the test set, minimal untargeted L-BFGS distortion on `curve_images` test images)."""

    name: str
    train_subset: int | None
    epochs: int | None
    seeds: int = 1
    arms: tuple[str, ...] = tuple(ARMS)
    pool: PoolConfig = DEFAULT_POOL
    n_robust: int = 300
    lbfgs: Mapping[str, Any] = field(default_factory=lambda: {"search_steps": 6})
    curve_every: int = 1
    curve_images: int = 100
    curve_lbfgs: Mapping[str, Any] = field(default_factory=lambda: {"search_steps": 2, "bracket_steps": 3,
                                                                     "max_iter": 30})
    fgsm_eps: float = 0.25

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or PLAIN not in self.arms or len(self.arms) < 2:
            raise SpecError(f"arms must include {PLAIN!r} and at least one pool arm out of {', '.join(ARMS)}; "
                            f"got {self.arms!r}.")
        if self.seeds < 1 or self.curve_every < 1:
            raise SpecError(f"seeds and curve_every must be positive, got {self.seeds} and {self.curve_every}.")


POOL_SIZES: dict[str, PoolSizes] = {
    # CI: one seed, weight decay alone vs all layers' pools on 5,000 images, curves every 5 epochs
    "quick": PoolSizes("quick", train_subset=5000, epochs=10, seeds=1, arms=(PLAIN, POOLED), n_robust=50,
                       lbfgs={"search_steps": 4, "max_iter": 50}, curve_every=5, curve_images=30),
    # the whole ablation on 20,000 images for 20 epochs, two seeds, curves every 2 epochs
    "standard": PoolSizes("standard", train_subset=20_000, epochs=20, seeds=2, n_robust=200, curve_every=2,
                          curve_images=50),
    # the paper's set-up: all 60,000 images, the FC recipe's 40 epochs, the whole ablation, three seeds
    "paper": PoolSizes("paper", train_subset=None, epochs=None, seeds=3, n_robust=500, curve_every=2),
}


def pool_sizes(profile: str) -> PoolSizes:
    """The §4.2 preset of a `reproduce` profile ("full" runs as "standard")."""
    key = "standard" if profile == "full" else profile
    if key not in POOL_SIZES:
        raise SpecError(f"no §4.2 preset for profile {profile!r}; choose one of {', '.join(POOL_SIZES)} or 'full'.")
    return POOL_SIZES[key]


# ---------------------------------------------------------------------------------------------- How minimal is minimal?

@dataclass(frozen=True)
class MinimalSizes:
    """How big "How minimal is minimal?" runs: nets (hidden widths, e.g. "20-20"), test images per net, the exact
    program's time limit per image (seconds), images of the L1 and L2 programs (0: none; L2's own time limit: SCIP
    proves L2 optima far more slowly, and past the limit the image gets proven bounds), the nets' training data."""

    nets: tuple[str, ...]
    n_images: int
    time_limit: float
    l1_images: int = 0
    l2_images: int = 0
    l2_time_limit: float = 60.0
    train_subset: int = 10_000
    epochs: int = 1


MINIMAL_SIZES = {
    "quick": MinimalSizes(("20-20",), n_images=4, time_limit=120.0),
    "standard": MinimalSizes(("20-20",), n_images=8, time_limit=15.0, l2_images=3, l2_time_limit=20.0),
    "paper": MinimalSizes(("20-20", "50-50"), n_images=100, time_limit=120.0, l1_images=10, l2_images=10,
                          l2_time_limit=300.0),
}


def minimal_sizes(profile: str) -> MinimalSizes:
    key = "standard" if profile == "full" else profile
    if key not in MINIMAL_SIZES:
        raise SpecError(f"no 'minimal' preset for profile {profile!r}; choose one of {', '.join(MINIMAL_SIZES)}.")
    return MINIMAL_SIZES[key]


# ---------------------------------------------------------------------------------------------- profiles

PARTS = ("tables", "units", "spectral", "s42", "minimal")  # Tables 1-3, §3, §4.3, §4.2, How minimal is minimal?


@dataclass(frozen=True)
class Profile:
    """Everything about how big a run is, in one object: training data, attacked images and the L-BFGS budget of
    Tables 1–3; `sections` the sizes of §3 and §4.3 (their FC models and CNN follow train_subset and epochs, so the
    Table 1 checkpoints are reused); `s42` the §4.2 ablation's; `parts` which of PARTS run. Any field can be set
    from the command line: `--set s42.seeds=1 --set parts=s42`."""

    name: str
    train_subset: int | None
    n_attack: int
    lbfgs: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None  # None: each recipe's own
    description: str = ""
    sections: SectionSizes | None = None  # None: the preset of the same name
    s42: PoolSizes | None = None  # None: the preset of the same name
    minimal: MinimalSizes | None = None  # None: the preset of the same name ("How minimal is minimal?")
    parts: tuple[str, ...] = PARTS

    def __post_init__(self) -> None:
        unknown = sorted(set(self.parts) - set(PARTS))
        if unknown or not self.parts:
            raise SpecError(f"parts {', '.join(unknown) or '(none)'}: choose among {', '.join(PARTS)}.")
        sections = self.sections or sizes_for(self.name)
        object.__setattr__(self, "sections", replace(sections, train_subset=self.train_subset, epochs=self.epochs,
                                                     cnn_train_subset=self.train_subset))
        if self.s42 is None:
            object.__setattr__(self, "s42", pool_sizes(self.name))
        if self.minimal is None:
            object.__setattr__(self, "minimal", minimal_sizes(self.name))


PROFILES: dict[str, Profile] = {
    "quick": Profile("quick", train_subset=10_000, n_attack=100, lbfgs={"search_steps": 8},
                     description="CI-sized: models trained on a 10,000-image subset, 100 images attacked per model"),
    "standard": Profile("standard", train_subset=None, n_attack=500, lbfgs={},
                        description="full MNIST training, 500 test images attacked per model"),
    "full": Profile("full", train_subset=None, n_attack=10_000, lbfgs={},
                    description="full MNIST training, every correctly classified test image attacked"),
    "paper": Profile("paper", train_subset=None, n_attack=10_000, lbfgs={},
                     description="the paper's scale: all 60,000 training images, every correctly classified test "
                                 "image attacked (Tables 1-3); §3 and §4.3 at the paper preset (hours on 2 cores)"),
}


__all__ = ["PARTS", "Profile", "PROFILES", "SectionSizes", "SIZES", "sizes_for", "PoolSizes", "POOL_SIZES", "pool_sizes",
           "DEFAULT_POOL", "MinimalSizes", "MINIMAL_SIZES", "minimal_sizes"]
