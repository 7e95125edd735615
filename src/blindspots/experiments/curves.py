"""Learning curves shared by both papers: what is measured on test images after a training epoch (clean error, FGSM
error, minimal L-BFGS distortion), and the paired comparison of two arms' curves over seeds (the final difference
with its Student-t interval, the seeds that end below, the epoch from which the mean curve stays below). Each
paper's training loop decides when to measure and its findings how to word the comparison."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from torch import Tensor, nn

from ..attacks import Misclassification, fgsm, lbfgs_attack
from ..data import ImageSet
from ..models import predict

CURVE_KEYS = ("test_error", "fgsm_error", "lbfgs_distortion")


def clean_error(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Share of the images `x` the model misclassifies."""
    return float((predict(model, x) != y).float().mean())


def fgsm_error(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> float:
    """Share of images whose FGSM image at `eps` is misclassified (clean mistakes included, as in Goodfellow et al.)."""
    device = next(model.parameters()).device
    res = fgsm(model, x.to(device), Misclassification(y.to(device)), [eps])
    return float(res.success[0].float().mean())


def lbfgs_distortion(model: nn.Module, x: Tensor, y: Tensor, options: Mapping[str, Any]) -> float | None:
    """Mean RMS distortion of the minimal untargeted L-BFGS examples of the images the model classifies correctly
    (those it gets wrong are left out, not counted at distortion 0); None where the search broke none."""
    device = next(model.parameters()).device
    res = lbfgs_attack(model, x.to(device), Misclassification(y.to(device)), **options)
    keep = res.success.cpu() & ~res.extras["clean_adversarial"].cpu()
    return float(res.rms.cpu()[keep].mean()) if bool(keep.any()) else None


@dataclass(frozen=True)
class CurveProbe:
    """The three curves measured on `test` after an epoch: clean error on all of it, FGSM error at `eps` on its first
    `n_fgsm` images (None: all) and the mean minimal untargeted L-BFGS distortion (attack options `lbfgs`, a short
    c search: a cheap, fixed estimate, not the attack's best) on its first `n_lbfgs`."""

    test: ImageSet
    eps: float
    n_lbfgs: int
    lbfgs: Mapping[str, Any] = field(default_factory=dict)
    n_fgsm: int | None = None

    def test_error(self, model: nn.Module) -> float:
        """Clean error on the whole test set."""
        return clean_error(model, self.test.images, self.test.labels)

    def fgsm_error(self, model: nn.Module) -> float:
        """FGSM error on the first `n_fgsm` test images."""
        return fgsm_error(model, self.test.images[:self.n_fgsm], self.test.labels[:self.n_fgsm], self.eps)

    def lbfgs_distortion(self, model: nn.Module) -> float | None:
        """Mean minimal L-BFGS distortion over the first `n_lbfgs` test images that the model gets right."""
        return lbfgs_distortion(model, self.test.images[:self.n_lbfgs], self.test.labels[:self.n_lbfgs], self.lbfgs)

    def measure(self, model: nn.Module) -> dict[str, float | None]:
        """All three, keyed as CURVE_KEYS."""
        return {"test_error": self.test_error(model), "fgsm_error": self.fgsm_error(model),
                "lbfgs_distortion": self.lbfgs_distortion(model)}


def mcnemar(control_wrong: Tensor, treated_wrong: Tensor) -> dict[str, Any]:
    """Exact McNemar test of two arms on the same images (boolean masks of their mistakes): the images only one
    arm gets wrong, and the two-sided binomial p-value that each such image is equally likely to be either arm's."""
    only_control = int((control_wrong & ~treated_wrong).sum())
    only_treated = int((treated_wrong & ~control_wrong).sum())
    n = only_control + only_treated
    p = float(stats.binomtest(only_treated, n, 0.5).pvalue) if n else 1.0
    return {"only_control_wrong": only_control, "only_treated_wrong": only_treated, "p": p}


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t confidence interval of the mean of `values` (over seeds); None for fewer than two."""
    n = len(values)
    if n < 2:
        return None
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


@dataclass(frozen=True)
class CurveComparison:
    """One quantity's curves of a treated arm against a control arm over the same seeds, paired seed by seed: each
    seed's last value (`treated_final`, `control_final`) and their difference treated − control, the mean
    difference per epoch on the epochs both ran, and `below_from`: the first of those epochs from which the mean
    treated curve stays below the mean control curve to the end (None if it is not below at the end)."""

    treated_final: list[float]
    control_final: list[float]
    mean_diff_by_epoch: list[float]
    below_from: int | None

    @property
    def differences(self) -> list[float]:
        """Per seed: treated − control at each curve's last point."""
        return [t - c for t, c in zip(self.treated_final, self.control_final)]

    @property
    def mean_difference(self) -> float:
        """The mean over seeds of `differences`."""
        return float(np.mean(self.differences))

    @property
    def interval(self) -> tuple[float, float] | None:
        """95% Student-t interval of `mean_difference` (None with one seed)."""
        return t_interval(self.differences)

    @property
    def seeds_below(self) -> int:
        """Seeds whose treated arm ends below its control."""
        return sum(d < 0 for d in self.differences)

    @property
    def common_epochs(self) -> int:
        """How many epochs both arms ran on every seed."""
        return len(self.mean_diff_by_epoch)


def compare_curves(treated: Sequence[Sequence[float]], control: Sequence[Sequence[float]],
                   epochs: Sequence[int]) -> CurveComparison:
    """Paired comparison of per-seed curves (treated[i] and control[i]: one seed, one value per epoch; curves may
    differ in length, and are compared over the epochs all of them ran). `epochs` labels the points (the control's
    epoch numbers); `below_from` is one of them."""
    if not treated or len(treated) != len(control):
        raise ValueError(f"compare_curves needs the same seeds in both arms, got {len(treated)} and {len(control)}.")
    common = min(len(c) for c in (*treated, *control))
    diff = np.array([np.asarray(t[:common], dtype=float) - np.asarray(c[:common], dtype=float)
                     for t, c in zip(treated, control)])
    mean_diff = diff.mean(axis=0)
    below_from = None
    for i in range(common - 1, -1, -1):
        if np.isnan(mean_diff[i]):  # an epoch some curve did not probe (curves probed every few epochs)
            continue
        if not mean_diff[i] < 0:
            break
        below_from = int(epochs[i])
    return CurveComparison([float(t[-1]) for t in treated], [float(c[-1]) for c in control],
                           [float(v) for v in mean_diff], below_from)


__all__ = ["CURVE_KEYS", "CurveProbe", "clean_error", "fgsm_error", "lbfgs_distortion", "mcnemar", "t_interval",
           "CurveComparison", "compare_curves"]
