"""Every run size of `reproduce szegedy2014`: the profiles (`Profile`, `PROFILES`; which PARTS run), each written out
whole with the sizes of its sections: §3 and §4.3 (`SectionSizes`), §4.2 (`PoolSizes`) and "How minimal is minimal?"
(`MinimalSizes`). Tables 1-3 take theirs from the profile itself (training data, attacked images, the L-BFGS budget).
No size is looked up by a profile's name, so `--set` reaches every one of them."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field, replace
from typing import ClassVar, TypedDict

from ...errors import SpecError
from ...training.pool import PoolConfig
from .common import ARMS, PLAIN, POOLED


class LbfgsOptions(TypedDict, total=False):
    """Options of attacks.lbfgs_attack a profile may set (`--set lbfgs=search_steps=2,max_iter=50` sets them all,
    `--set lbfgs.max_iter=50` one); none set: the attack's defaults. tests check these against its signature."""

    backend: str
    c_init: float
    search_steps: int
    bracket_steps: int
    max_iter: int
    history: int
    gtol: float
    ftol: float
    loss: str
    batch_size: int | None


# ---------------------------------------------------------------------------------------------- §3 and §4.3

@dataclass(frozen=True)
class SectionSizes:
    """How big §3 and §4.3 run. `train_subset` / `epochs` are those of their FC models, `cnn_*` those of their CNN
    (None: all 60,000 images / the recipe's epochs); every preset trains them on Table 1's data, so the store's
    checkpoints are reused, and `--set train_subset=…` / `--set epochs=…` move them along (profiles.FOLLOWERS)."""

    name: str
    train_subset: int | None
    epochs: int | None
    cnn_train_subset: int | None
    cnn_epochs: int | None
    unit_images: int | None  # §3: test images searched for the top-k (None: all 10,000)
    n_directions: int  # §3: units and random directions per layer
    n_pairs: int  # §4.3: test images attacked per model that gets no pairs handed in
    lbfgs: LbfgsOptions = field(default_factory=LbfgsOptions)  # minimal attack for §4.3 pairs


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
    lbfgs: LbfgsOptions = field(default_factory=lambda: LbfgsOptions(search_steps=6))
    curve_every: int = 1
    curve_images: int = 100
    curve_lbfgs: LbfgsOptions = field(default_factory=lambda: LbfgsOptions(search_steps=2, bracket_steps=3,
                                                                           max_iter=30))
    fgsm_eps: float = 0.25

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or PLAIN not in self.arms or len(self.arms) < 2:
            raise SpecError(f"arms must include {PLAIN!r} and at least one pool arm out of {', '.join(ARMS)}; "
                            f"got {self.arms!r}.")
        if self.seeds < 1 or self.curve_every < 1:
            raise SpecError(f"seeds and curve_every must be positive, got {self.seeds} and {self.curve_every}.")


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


# ---------------------------------------------------------------------------------------------- profiles

PARTS = ("tables", "units", "spectral", "s42", "minimal")  # Tables 1-3, §3, §4.3, §4.2, How minimal is minimal?
MNIST_TEST = 10_000


@dataclass(frozen=True)
class Profile:
    """Everything about how big a run is, in one object: training data, attacked images and the L-BFGS budget of
    Tables 1–3; `sections` the sizes of §3 and §4.3; `s42` the §4.2 ablation's; `minimal` those of "How minimal is
    minimal?"; `parts` which of PARTS run. Any field can be set from the command line: `--set s42.seeds=1 --set
    parts=s42`; `--set train_subset=…` (`epochs=…`) also sets the §3/§4.3 models' (FOLLOWERS) unless set too."""

    # `--set KEY=…` of a top-level field also sets these nested ones, unless the same command sets them itself
    FOLLOWERS: ClassVar[dict[str, tuple[str, ...]]] = {
        "train_subset": ("sections.train_subset", "sections.cnn_train_subset"), "epochs": ("sections.epochs",)}

    name: str
    _: KW_ONLY
    train_subset: int | None
    n_attack: int
    lbfgs: LbfgsOptions = field(default_factory=LbfgsOptions)
    epochs: int | None = None  # None: each recipe's own
    sections: SectionSizes
    s42: PoolSizes
    minimal: MinimalSizes
    parts: tuple[str, ...] = PARTS

    def __post_init__(self) -> None:
        unknown = sorted(set(self.parts) - set(PARTS))
        if unknown or not self.parts:
            raise SpecError(f"parts {', '.join(unknown) or '(none)'}: choose among {', '.join(PARTS)}.")

    @property
    def description(self) -> str:
        """One line for the report, from the fields (so it follows --n-attack and --set)."""
        data = "full MNIST training" if self.train_subset is None else \
            f"models trained on a {self.train_subset:,}-image subset"
        if self.epochs is not None:
            data += f" for {self.epochs} epochs"
        attacked = ("every correctly classified test image attacked" if self.n_attack >= MNIST_TEST else
                    f"{self.n_attack:,} test images attacked") + " per model (Tables 1-3)"
        s, p, m = self.sections, self.s42, self.minimal
        parts = {
            "units": f"§3 {s.n_directions} directions per layer",
            "spectral": f"§4.3 {s.n_pairs:,} CNN pairs",
            "s42": f"§4.2 {len(p.arms)} arms × {p.seeds} seed(s) on "
                   f"{'60,000' if p.train_subset is None else f'{p.train_subset:,}'} images",
            "minimal": f"exact minima on {m.n_images} images per net ({', '.join(m.nets)})"}
        sections = "; ".join(text for part, text in parts.items() if part in self.parts)
        if "tables" not in self.parts:
            return f"{sections} (Tables 1-3 not run)"
        return f"{data}, {attacked}" + (f"; {sections}" if sections else "")


# full-data CNN and FC nets, 100 directions over all 10,000 test images, 100 CNN pairs; §4.2 the whole ablation on
# 20,000 images for 20 epochs, two seeds, curves every 2 epochs
_STANDARD = Profile(
    "standard", train_subset=None, n_attack=500, lbfgs={},
    sections=SectionSizes("standard", train_subset=None, epochs=None, cnn_train_subset=None, cnn_epochs=None,
                          unit_images=None, n_directions=100, n_pairs=100, lbfgs={"search_steps": 6}),
    s42=PoolSizes("standard", train_subset=20_000, epochs=20, seeds=2, n_robust=200, curve_every=2, curve_images=50),
    minimal=MinimalSizes(("20-20",), n_images=8, time_limit=15.0, l2_images=3, l2_time_limit=20.0))

PROFILES: dict[str, Profile] = {
    # CI-sized: small subsets, 20 directions, 30 pairs; §4.2 weight decay alone vs all layers' pools on 5,000 images,
    # curves every 5 epochs
    "quick": Profile(
        "quick", train_subset=10_000, n_attack=100, lbfgs={"search_steps": 8},
        sections=SectionSizes("quick", train_subset=10_000, epochs=None, cnn_train_subset=10_000, cnn_epochs=2,
                              unit_images=2000, n_directions=20, n_pairs=30,
                              lbfgs={"search_steps": 4, "max_iter": 50}),
        s42=PoolSizes("quick", train_subset=5000, epochs=10, seeds=1, arms=(PLAIN, POOLED), n_robust=50,
                      lbfgs={"search_steps": 4, "max_iter": 50}, curve_every=5, curve_images=30),
        minimal=MinimalSizes(("20-20",), n_images=4, time_limit=120.0)),
    "standard": _STANDARD,
    # standard with every correctly classified test image attacked (its §4.2 sizes keep standard's name)
    "full": replace(_STANDARD, name="full", n_attack=10_000, sections=replace(_STANDARD.sections, name="full")),
    # the paper's scale (hours on 2 cores): all 60,000 training images, every correctly classified test image attacked;
    # §3 every unit of each analysed layer (100 wide) over all 10,000 test images, §4.3 1,000 CNN pairs attacked with
    # the full L-BFGS search (the Table 1 models' pairs are every correctly classified test image); §4.2 the paper's
    # set-up: all 60,000 images, the FC recipe's 40 epochs, the whole ablation, three seeds
    "paper": Profile(
        "paper", train_subset=None, n_attack=10_000, lbfgs={},
        sections=SectionSizes("paper", train_subset=None, epochs=None, cnn_train_subset=None, cnn_epochs=None,
                              unit_images=None, n_directions=100, n_pairs=1000, lbfgs={}),
        s42=PoolSizes("paper", train_subset=None, epochs=None, seeds=3, n_robust=500, curve_every=2),
        minimal=MinimalSizes(("20-20", "50-50"), n_images=100, time_limit=120.0, l1_images=10, l2_images=10,
                             l2_time_limit=300.0)),
}


__all__ = ["PARTS", "Profile", "PROFILES", "LbfgsOptions", "SectionSizes", "PoolSizes", "DEFAULT_POOL",
           "MinimalSizes"]
