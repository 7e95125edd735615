"""`blindspots reproduce goodfellow2015`: the MNIST experiments of Goodfellow, Shlens & Szegedy, Explaining and
Harnessing Adversarial Examples (ICLR 2015), on real MNIST.

Modules: `profiles` (every run size: the profiles), `experiment` (the Experiment and its run), one per section of the
paper with its stages — `training` (the maxout protocol: early stopping, then the second phase, with learning curves;
the store-trained softmax and RBF nets), `logreg` (§5: the 3-vs-7 logistic regression), `fgsm` (§4: FGSM at a list
of ε, re-verified from disk; transfer between the models), `rubbish` (noise called a digit), `ensemble_l1` (the
ensemble and the L1-decay arms) —, `common` (the models, constants and helpers the sections share), `findings`
(numbers computed from the stages' results: ours beside the paper's, the curves' verdicts, the run's facts),
`figures` (every plot) and `report` (the report, a pure function of results.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..overrides import pick_profile
from .common import (EPSILON, EPSILONS, LOGREG, LOGREG_LABEL, NETS, Net, fit_logreg, logreg_data, nets,
                     predict_confidence, protocol_recipe)
from .experiment import Goodfellow2015
from .findings import curve_verdict, findings
from .profiles import PROFILES, Profile
from .report import build_report, terminal_summary


def reproduce(out: str | Path = "runs/goodfellow2015", profile: str = "standard", *, seed: int = 0,
              n_attack: int | None = None, device: str = "cpu", progress: bool = True,
              announce: Any = print, overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """Run (or resume) the reproduction; returns results.json's content."""
    prof = pick_profile(PROFILES, profile, n_attack, overrides)
    return Goodfellow2015(Path(out), prof, seed=seed, device=device, progress=progress, announce=announce).run()


__all__ = ["reproduce", "terminal_summary", "build_report", "findings", "curve_verdict", "PROFILES",
           "Profile", "NETS", "Net", "nets", "LOGREG", "LOGREG_LABEL", "EPSILON", "EPSILONS", "fit_logreg",
           "logreg_data", "predict_confidence", "protocol_recipe", "Goodfellow2015"]
