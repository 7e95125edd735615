"""`blindspots reproduce goodfellow2015`: the MNIST experiments of Goodfellow, Shlens & Szegedy, Explaining and
Harnessing Adversarial Examples (ICLR 2015), on real MNIST.

config (profiles, models, constants), protocol (early stopping + retraining with learning curves), stages (the
cached stages of a run), findings (ours beside the paper's, the curves' verdicts, the run's facts), figures and
report (a pure function of results.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..stages import pick_profile
from .config import (EPSILON, EPSILONS, LOGREG, LOGREG_LABEL, NETS, PROFILES, Net, Profile, fit_logreg, logreg_data,
                     nets, predict_confidence, protocol_recipe)
from .findings import curve_verdict, findings
from .report import build_report, terminal_summary
from .stages import Goodfellow2015


def reproduce(out: str | Path = "runs/goodfellow2015", profile: str = "standard", *, seed: int = 0,
              n_attack: int | None = None, device: str = "cpu", progress: bool = True,
              announce: Any = print, overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """Run (or resume) the reproduction; returns results.json's content."""
    prof = pick_profile(PROFILES, profile, n_attack, overrides)
    return Goodfellow2015(Path(out), prof, seed=seed, device=device, progress=progress, announce=announce).run()


__all__ = ["reproduce", "terminal_summary", "build_report", "findings", "curve_verdict", "PROFILES",
           "Profile", "NETS", "Net", "nets", "LOGREG", "LOGREG_LABEL", "EPSILON", "EPSILONS", "fit_logreg",
           "logreg_data", "predict_confidence", "protocol_recipe", "Goodfellow2015"]
