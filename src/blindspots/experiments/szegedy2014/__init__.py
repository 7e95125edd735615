"""`blindspots reproduce szegedy2014`: Szegedy et al., Intriguing properties of neural networks (ICLR 2014), on MNIST.

Modules: `profiles` (every run size: the profiles and the sizes of each section), `experiment` (the Experiment and its
run), one per section of the paper with its stages — `tables` (Tables 1-3: training, L-BFGS attacks, transfer,
Gaussian controls, certified radii), `units` (§3), `spectral` (§4.3), `adv_training` (§4.2), `minimal` ("How minimal
is minimal?") —, `common` (the models, arms and helpers the sections share), `findings` (numbers computed from the
stages' results: the §4.2 curves' verdicts, the run's facts), `figures` (every plot drawn here) and `report` (the
report, a pure function of results.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...parallel import World
from ..overrides import pick_profile
from .experiment import Szegedy2014
from .profiles import PROFILES, Profile
from .report import build_report, terminal_summary


def reproduce(out: str | Path = "runs/szegedy2014", profile: str = "standard", *, seed: int = 0,
              n_attack: int | None = None, device: str = "cpu", progress: bool = True,
              announce: Any = print, world: World | None = None,
              overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """Run (or resume) the reproduction; returns results.json's content. Under torchrun (`world` of several
    processes) the L-BFGS attack stages are split across the ranks, with the same numbers as one process; rank 0
    runs every other stage and writes everything; the other ranks return {} after the attacks."""
    prof = pick_profile(PROFILES, profile, n_attack, overrides)
    return Szegedy2014(Path(out), prof, seed=seed, device=device, progress=progress, announce=announce,
                       world=world).run()

__all__ = ["PROFILES", "Profile", "Szegedy2014", "build_report", "reproduce", "terminal_summary"]
