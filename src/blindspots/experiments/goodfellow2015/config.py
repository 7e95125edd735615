"""What a goodfellow2015 run is made of: its profiles, its models, the maxout training protocol's constants,
the 3-vs-7 logistic regression and the rubbish-noise settings. No stage logic here."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...data import load_mnist
from ...models import predict_logits
from ...models.train import Recipe, original_maxout_recipe
from ...models.zoo import BinaryLogistic
from ...errors import SpecError
from ...training.adversarial import Objective

PAPER = "goodfellow2015"
EPSILON = 0.25
EPSILONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
LOGREG_DECAY = 1e-4  # λ of mean logistic loss + (λ/2)·‖w‖² (unspecified in the paper)
LOGREG_CLASSES = (3, 7)  # negative, positive
LOGREG = "logreg37"
LOGREG_LABEL = "logistic regression, 3 vs 7"
DIGIT_THRESHOLD = 0.5
TRAIN_ROWS, VALID_ROWS = 50_000, 10_000  # the maxout protocol's split of the 60,000 training images
# the paper's L1 coefficient on the first layer (too strong: training error stalls above 5%) and two smaller ones
L1_COEFFICIENTS = (0.0025, 0.00025, 0.000025)

def protocol_recipe(spec: str, max_epochs: int) -> Recipe:
    """Every maxout net of every profile: the original maxout recipe (pylearn2's mnist_pi.yaml, value for value),
    with `max_epochs` capping each phase. Its schedules run per minibatch and per epoch from the start of the
    first phase, so the second phase continues them where the best epoch left them."""
    if not spec.upper().startswith("MAXOUT"):
        raise ValueError(f"the maxout protocol trains maxout nets, not {spec}")
    r = original_maxout_recipe(max_epochs)
    return replace(r, note=r.note + "; early stopping on the validation rows, then the second phase on all rows")


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


@dataclass(frozen=True)
class Net:
    """One 10-class model of the experiment. `stop_on`: the early-stopping criterion, "clean" (validation
    error) or "fgsm" (error on the validation images' FGSM images at ε = 0.25); `curves`: "full" (clean test
    error, FGSM error, minimal L-BFGS distortion per epoch) or "clean" (clean test error only)."""

    key: str
    label: str
    spec: str
    objective: Objective | None = None
    stop_on: str = "clean"
    curves: str = "full"
    compare: bool = False  # trained on every seed of the profile: part of the plain-vs-adversarial comparison
    # after early stopping: "continue" the best model on all rows until the validation objective reaches the best
    # epoch's training objective (pylearn2's mnist_pi_continued.yaml), or "retrain" from scratch for that many
    # epochs (the paper's 1600-unit net)
    second_phase: str = "continue"

    @property
    def is_maxout(self) -> bool:
        return self.spec.upper().startswith("MAXOUT")

    @property
    def independent_outputs(self) -> bool:
        return self.spec == "RBF"


FGSM_TRAINING = Objective("fgsm", EPSILON, 0.5)
NETS = (
    Net("softmax", "shallow softmax", "FC10(1e-4)"),
    Net("maxout", "maxout", "MAXOUT", compare=True),
    Net("maxout_adv", "maxout, adversarial training", "MAXOUT", FGSM_TRAINING, compare=True),
    Net("maxout_sign", "maxout, ±ε sign-noise training", "MAXOUT", Objective("sign_noise", EPSILON, 0.5),
        curves="clean"),
    Net("maxout_uniform", "maxout, U(−ε, ε)-noise training", "MAXOUT", Objective("uniform_noise", EPSILON, 0.5),
        curves="clean"),
    Net("rbf", "RBF", "RBF"),
)


@dataclass(frozen=True)
class FixedNet:
    """A net of the ensemble or L1 sections: the original maxout recipe for a fixed number of epochs on the
    profile's training rows, with an optional training objective and L1 decay on the first layer."""

    key: str
    label: str
    spec: str
    epochs: int
    seed: int
    objective: Objective | None = None
    l1: float = 0.0

    @property
    def recipe(self) -> Recipe:
        r = original_maxout_recipe(self.epochs)
        note = f"; a fixed {self.epochs} epochs" + (f"; L1 decay {self.l1:g}·Σ|W| on the first layer"
                                                     if self.l1 else "")
        return replace(r, l1_first=self.l1, note=r.note + note)


def ensemble_members(profile: Profile, seed: int) -> list[FixedNet]:
    """The ensemble's members: the same spec and budget, seeds seed, seed + 1, …"""
    return [FixedNet(f"member{i}", f"member {i + 1} (seed {seed + i})", profile.ensemble_spec,
                     profile.ensemble_epochs, seed + i) for i in range(profile.ensemble_members)]


def l1_arms(profile: Profile, seed: int) -> list[FixedNet]:
    """Plain training, L1 decay at each coefficient, FGSM adversarial training: one seed, one budget."""
    if not profile.l1_coefficients:
        return []
    spec, e = profile.l1_spec, profile.l1_epochs
    return ([FixedNet("plain", "plain training", spec, e, seed)]
            + [FixedNet(f"l1_{c:g}", f"L1 decay {c:g} on the first layer", spec, e, seed, l1=float(c))
               for c in profile.l1_coefficients]
            + [FixedNet("adversarial", "FGSM adversarial training", spec, e, seed, FGSM_TRAINING)])


def wide_net(units: int) -> Net:
    """The paper's best adversarially trained net: wider, early-stopped on the adversarial validation error."""
    return Net("maxout_adv_wide", f"maxout {units} units, adversarial training", f"MAXOUT{units}", FGSM_TRAINING,
               stop_on="fgsm", compare=True, second_phase="retrain")


def nets(profile: Profile) -> tuple[Net, ...]:
    """The nets a profile runs, in report order."""
    every = NETS + ((wide_net(profile.wide_units),) if profile.wide_units else ())
    if profile.nets is None:
        return every
    unknown = set(profile.nets) - {n.key for n in every}
    if unknown:
        raise SpecError(f"unknown net(s) {', '.join(sorted(unknown))} in the profile; choose from "
                        f"{', '.join(n.key for n in every)}.")
    return tuple(n for n in every if n.key in profile.nets)


def noise_settings(train_pixels: Tensor) -> dict[str, dict[str, Any]]:
    """Rubbish-class inputs: i.i.d. Gaussian pixels. The first setting is the headline one."""
    mean, std = float(train_pixels.mean()), float(train_pixels.std())
    return {
        "data moments": {"mean": round(mean, 4), "std": round(std, 4), "clip": True,
                         "text": f"N({mean:.3f}, {std:.3f}²) per pixel (the mean and standard deviation of MNIST "
                                 "training pixels), clipped to [0, 1]"},
        "mid-grey": {"mean": 0.5, "std": 0.5, "clip": True, "text": "N(0.5, 0.5²) per pixel, clipped to [0, 1]"},
        "isotropic": {"mean": 0.0, "std": 1.0, "clip": False,
                      "text": "N(0, 1) per pixel, not clipped (outside the pixel box)"},
    }


def rubbish_images(n: int, setting: dict[str, Any], seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(int(seed))
    x = setting["mean"] + setting["std"] * torch.randn((n, 1, 28, 28), generator=gen)
    return x.clamp(0, 1) if setting["clip"] else x


def logreg_data(split: str) -> tuple[Tensor, Tensor, np.ndarray]:
    """Images of 3s and 7s of a split, labels 0 (3) / 1 (7), and their rows in the IDX file."""
    data = load_mnist(split)
    neg, pos = LOGREG_CLASSES
    keep = (data.labels == neg) | (data.labels == pos)
    return data.images[keep], (data.labels[keep] == pos).long(), data.indices[keep.numpy()]


def fit_logreg(x: Tensor, y01: Tensor, weight_decay: float = LOGREG_DECAY) -> BinaryLogistic:
    """Mean logistic loss + (λ/2)·‖w‖² minimised to its optimum by full-batch L-BFGS (convex: from zero)."""
    model = BinaryLogistic()
    nn.init.zeros_(model.linear.weight)
    nn.init.zeros_(model.linear.bias)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=500, history_size=20, tolerance_grad=1e-9,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")
    target = y01.float()

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = (F.binary_cross_entropy_with_logits(model(x), target)
                + 0.5 * weight_decay * model.linear.weight.square().sum())
        loss.backward()
        return loss

    opt.step(closure)
    return model.eval()


def binary_error(model: nn.Module, x: Tensor, y01: Tensor) -> float:
    """Error of a one-logit model (z > 0: the positive class)."""
    return float(((predict_logits(model, x) > 0).long() != y01).float().mean())


def predict_confidence(model: nn.Module, x: Tensor, independent: bool = False,
                       batch_size: int = 1000) -> tuple[Tensor, Tensor, Tensor]:
    """(predicted class, confidence, classified-as-a-digit) by a fresh eval-mode forward pass.

    Confidence is the softmax probability of the predicted class, or for a net with independent outputs
    (RBF) the predicted unit's own output exp(logit); "a digit" means confidence >= 0.5.
    """
    logits = predict_logits(model, x, batch_size).float()
    top, pred = logits.max(dim=-1)
    conf = top.exp() if independent else logits.softmax(dim=-1).max(dim=-1).values
    return pred, conf, conf >= DIGIT_THRESHOLD


def mean_or_none(values: Tensor) -> float | None:
    """Mean of a possibly empty selection; None (not NaN, which JSON and equality handle badly) if empty."""
    return float(values.float().mean()) if values.numel() else None
