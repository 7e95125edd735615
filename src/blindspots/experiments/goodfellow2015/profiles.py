"""Every run size of `reproduce goodfellow2015`: the profiles (`Profile`, `PROFILES`), each carrying the sizes of every
section (the maxout protocol's rows, epochs and patience, seeds, attacked and noise images, curve probes, the
ensemble and the L1 arms)."""

from __future__ import annotations

from dataclasses import dataclass

TRAIN_ROWS, VALID_ROWS = 50_000, 10_000  # the maxout protocol's split of the 60,000 training images
# the paper's L1 coefficient on the first layer (too strong: training error stalls above 5%) and two smaller ones
L1_COEFFICIENTS = (0.0025, 0.00025, 0.000025)


@dataclass(frozen=True)
class Profile:
    """How big a run is. Every profile follows the same protocol (early stopping on the validation rows, then
    retraining on training + validation rows for the early-stopped number of epochs); only the sizes differ."""

    name: str
    n_train: int  # first rows of the 60,000 used for the early-stopping phase (≤ 50,000)
    n_valid: int  # validation rows, from row 50,000 on (≤ 10,000)
    max_epochs: int  # cap of the early-stopping phase
    patience: int  # stop when validation error has not improved for this many epochs
    seeds: int  # seeds of the plain-vs-adversarial comparison (the other models: the run's seed only)
    n_attack: int | None  # None: the whole test set
    n_noise: int
    n_curve_fgsm: int  # test images whose FGSM error is measured after every epoch
    n_curve_lbfgs: int  # test images whose minimal L-BFGS distortion is measured after every `lbfgs_every` epochs
    lbfgs_every: int = 1  # 0: at the last retraining epoch only (the quick profile: L-BFGS dominates its cost)
    store_subset: int | None = None  # training images of the softmax and RBF nets (None: all 60,000)
    wide_units: int | None = None  # also train the paper's wide adversarial net (MAXOUT<units>), early-stopped
    checkpoint_every: int = 5  # epochs between saved training states (a killed run resumes from the last)
    curve_every: int = 1  # epochs between the test / FGSM curve probes (validation error is measured every epoch)
    nets: tuple[str, ...] | None = None  # keys of the nets to run (None: all of them)
    early_stop_curves: bool = False  # test error, test FGSM and validation FGSM error per early-stopping epoch too
    # the ensemble (§ "ensembles are not a defence"): members of this spec with seeds seed, seed + 1, …, each the
    # original maxout recipe for a fixed number of epochs on the n_train training rows (0 members: not run)
    ensemble_members: int = 0
    ensemble_spec: str = "MAXOUT"
    ensemble_epochs: int = 0
    # L1 weight decay on the first layer: one net per coefficient beside a plain and an FGSM-trained one, same
    # spec, seed, rows and fixed number of epochs (no coefficients: not run)
    l1_coefficients: tuple[float, ...] = ()
    l1_spec: str = "MAXOUT"
    l1_epochs: int = 0

    @property
    def description(self) -> str:
        wide = f"; a {self.wide_units}-unit adversarially trained net too" if self.wide_units else ""
        attacked = "the whole test set" if self.n_attack is None else f"{self.n_attack:,} test images"
        only = "" if self.nets is None else f"; only the nets {', '.join(self.nets)}"
        if self.ensemble_members:
            only += (f"; an ensemble of {self.ensemble_members} {self.ensemble_spec} nets ({self.ensemble_epochs} "
                     "epochs each)")
        if self.l1_coefficients:
            only += (f"; {self.l1_spec} nets with L1 decay {', '.join(f'{c:g}' for c in self.l1_coefficients)} "
                     f"on the first layer beside plain and adversarial training ({self.l1_epochs} epochs each)")
        return (f"maxout nets (the original maxout recipe) early-stopped on {self.n_valid:,} validation images after "
                f"training on {self.n_train:,} (at most {self.max_epochs} epochs per phase, patience {self.patience}), "
                f"then continued on both; {self.seeds} seed(s) for plain vs adversarial training{wide}; {attacked} "
                f"attacked; {self.n_noise:,} noise images{only}")


PROFILES: dict[str, Profile] = {
    # the original recipe starts from weights U(±0.005): some 500 minibatches (more with adversarial training: 76%
    # validation error after 500 on full data, 8% after 1,000) pass on a plateau near 88% error, so quick trains
    # 60 minibatches × 20 epochs with a patience as long as the run (a shorter one stops on the plateau)
    "quick": Profile("quick", n_train=6_000, n_valid=1_000, max_epochs=20, patience=20, seeds=2, n_attack=1_000,
                     n_noise=1_000, n_curve_fgsm=500, n_curve_lbfgs=10, lbfgs_every=0, store_subset=5_000,
                     ensemble_members=3, ensemble_spec="MAXOUT128", ensemble_epochs=20,
                     l1_coefficients=L1_COEFFICIENTS, l1_spec="MAXOUT128", l1_epochs=20),
    # ensemble and L1: 240-unit nets, 5 epochs of 50,000 rows each (2,500 minibatches); at one thread ~7 s per
    # plain epoch and ~14 s per adversarial one: 12 × 5 × 7 + 3 × 5 × 7 + 5 × 14 ≈ 10 min of training (the plain
    # L1 arm is the first member's stage), ~1.5 min of per-epoch training-error passes, ~1 min of attacks: ≈ 13 min
    "standard": Profile("standard", n_train=TRAIN_ROWS, n_valid=VALID_ROWS, max_epochs=25, patience=5, seeds=2,
                        n_attack=None, n_noise=10_000, n_curve_fgsm=2_000, n_curve_lbfgs=100,
                        ensemble_members=12, ensemble_spec="MAXOUT", ensemble_epochs=5,
                        l1_coefficients=L1_COEFFICIENTS, l1_spec="MAXOUT", l1_epochs=5),
    "paper": Profile("paper", n_train=TRAIN_ROWS, n_valid=VALID_ROWS, max_epochs=1_000, patience=100, seeds=5,
                     n_attack=None, n_noise=10_000, n_curve_fgsm=10_000, n_curve_lbfgs=100, wide_units=1600,
                     checkpoint_every=2, ensemble_members=12, ensemble_spec="MAXOUT", ensemble_epochs=100,
                     l1_coefficients=L1_COEFFICIENTS, l1_spec="MAXOUT", l1_epochs=100),
    # §6's plain vs adversarial pair at the paper's scale alone: one seed, patience 100, per-epoch curves in both
    # phases (the profile behind results/goodfellow2015-maxout-original)
    "pair": Profile("pair", n_train=TRAIN_ROWS, n_valid=VALID_ROWS, max_epochs=1_000, patience=100, seeds=1,
                    n_attack=None, n_noise=10_000, n_curve_fgsm=2_000, n_curve_lbfgs=100, lbfgs_every=10,
                    checkpoint_every=2, nets=("maxout", "maxout_adv"), early_stop_curves=True),
}


__all__ = ["Profile", "PROFILES", "TRAIN_ROWS", "VALID_ROWS", "L1_COEFFICIENTS"]
