"""What the Goodfellow et al. 2015 sections share: the models (`Net`, NETS, `FixedNet`), the constants (ε, the 3-vs-7
logistic regression's), the maxout protocol's recipe, the logistic regression's fit, the rubbish-noise settings and
small prediction helpers. Run sizes are in `profiles`; no stage logic here."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

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
from .profiles import Profile

if TYPE_CHECKING:  # the section mixins (TrainingStages, FgsmStages, ...) are typed as the experiment they are mixed into
    from ..stages import Experiment as Stages
else:
    Stages = object

PAPER = "goodfellow2015"
EPSILON = 0.25
EPSILONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
LOGREG_DECAY = 1e-4  # λ of mean logistic loss + (λ/2)·‖w‖² (unspecified in the paper)
LOGREG_CLASSES = (3, 7)  # negative, positive
LOGREG = "logreg37"
LOGREG_LABEL = "logistic regression, 3 vs 7"
DIGIT_THRESHOLD = 0.5

def protocol_recipe(spec: str, max_epochs: int) -> Recipe:
    """Every maxout net of every profile: the original maxout recipe (pylearn2's mnist_pi.yaml, value for value),
    with `max_epochs` capping each phase. Its schedules run per minibatch and per epoch from the start of the
    first phase, so the second phase continues them where the best epoch left them."""
    if not spec.upper().startswith("MAXOUT"):
        raise ValueError(f"the maxout protocol trains maxout nets, not {spec}")
    r = original_maxout_recipe(max_epochs)
    return replace(r, note=r.note + "; early stopping on the validation rows, then the second phase on all rows")


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
