"""`blindspots reproduce szegedy2014`: Tables 1-3 of Szegedy et al. (ICLR 2014) on real MNIST, then §3, §4.3, §4.2.

Stages (each cached by a key of its inputs, see stages.py; Tables 1-3's in `tables`): train every model, attack
every model with box-constrained L-BFGS, feed every adversarial (and noise) set to every model, run the sections,
then write results.json and the report built from it alone (`report.build_report`).

Documented choices where the paper is silent:
- attacked images: the first `n_attack` test images, in a fixed seeded order, that the attacked model
  classifies correctly (clean errors are excluded and counted, so the transfer matrix's diagonal equals
  the attack's success rate); each gets a random target label != its true label (seeded);
- an adversarial set holds x_adv where the attack succeeded and the clean image where it failed;
- a transfer cell is the column model's error (prediction != true label) on the row's set;
- Gaussian rows in two readings on one seeded draw: N(0, sigma^2) per pixel added unclipped (the paper's reading:
  RMS distortion sigma, inputs outside [0, 1]) and clipped to [0, 1]; "matched" noise is clipped noise with the
  same realised RMS distortion as the row's adversarial set;
- Table 3's magnified sets rescale each perturbation to a per-pixel RMS of 0.1 (the paper's stated
  intent; its printed formula x + 0.1 (x'-x)/||x'-x||_2 would be far smaller), clipped to the box.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...io import write_json_atomic
from ...parallel import World
from ...progress import eta_loop
from ...report.document import Section, write_report
from ...stages import StageSource
from ..paths import portable_paths
from ..stages import Experiment
from .adv_training import adversarial_training_section
from .common import SPECTRAL_MODELS
from .findings import facts
from .minimal import minimal_section
from .profiles import Profile
from .report import build_report
from .spectral import spectral_section
from .tables import MAGNIFY_SIGMA, TABLE1_MODELS, ModelRef, TableStages, model_refs
from .units import units_section


# What each kind of stage runs (stages.StageSource): the modules whose functions its compute calls, with what they
# import; the module holding the compute as a file. A change to one attack re-keys only the stages that run it (the
# zoo is never retrained for an attack fix). Transfer and certify read the attack stage's adversarial sets under a
# key of its inputs, so they include its parts. tests/test_stage_sources.py traces real tiny runs of these kinds.
_TABLES = "experiments/szegedy2014/tables.py"
_TRAIN = StageSource(modules=("blindspots.models.store",), files=(_TABLES,))
_ATTACK = StageSource(modules=("blindspots.attacks.lbfgs", "blindspots.attacks.storage", "blindspots.data.datasets",
                               "blindspots.models.inference", "blindspots.experiments.stages",
                               "blindspots.report.figures", "blindspots.report.plots"),  # its examples, histogram
                        files=(_TABLES,))
_SPECTRAL = StageSource(modules=("blindspots.experiments.szegedy2014.spectral",))
_MINIMAL = StageSource(modules=("blindspots.experiments.szegedy2014.minimal",))
STAGE_SOURCES = {
    "train ": _TRAIN,
    "attack ": _ATTACK,
    "transfer ": _ATTACK.with_(modules=("blindspots.attacks.noise",)),
    "certify ": _ATTACK.with_(modules=("blindspots.verify.certify",)),
    "units ": StageSource(modules=("blindspots.analysis.units", "blindspots.models.store",
                                   "blindspots.report.unit_figures"),  # the unit grids it draws
                          files=("experiments/szegedy2014/units.py", "experiments/szegedy2014/common.py")),
    "bound pairs ": _SPECTRAL,
    "bounds ": _SPECTRAL,
    "s4.2 ": StageSource(modules=("blindspots.experiments.szegedy2014.adv_training",)),
    "minimal train ": _MINIMAL,
    "minimal exact ": _MINIMAL.with_(modules=("blindspots.attacks.registry",)),  # every registered attack
}


class Szegedy2014(TableStages, Experiment):
    """The experiment: holds the profile, the stage runner, and the trained models."""

    profile: Profile
    stage_sources = STAGE_SOURCES

    def __init__(self, out: Path, profile: Profile, seed: int = 0, device: str = "cpu",
                 progress: bool = True, announce: Any = print, world: World | None = None) -> None:
        super().__init__(out, profile, seed=seed, device=device, progress=progress, announce=announce, world=world)

    # ---- the whole run ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t_start = time.perf_counter()
        refs = model_refs()
        t1_refs, t3_refs = refs[: len(TABLE1_MODELS)], refs[len(TABLE1_MODELS):]
        tables = "tables" in self.profile.parts
        if tables:
            stage_t = time.perf_counter()
            for ref in eta_loop(refs, "train models", self.runner.announce, self.progress):
                self.models[ref.label] = self._train_stage(ref)
            self.timings["train"] = time.perf_counter() - stage_t
            stage_t = time.perf_counter()
            for ref in eta_loop(refs, "attack models", self.runner.announce, self.progress):
                self.attacks[ref.label] = self._attack_stage(ref)
            self.timings["attack"] = time.perf_counter() - stage_t
        if not self.world.is_main:  # under torchrun the ranks share the attacks; rank 0 runs the rest alone
            return {}
        table1 = table2 = table3 = None
        if tables:
            stage_t = time.perf_counter()
            table2 = self._transfer_table(t1_refs, t1_refs, gaussian_base=t1_refs[3])
            table3 = self._transfer_table(t3_refs, t3_refs, gaussian_base=t3_refs[0], magnified=True,
                                          sigmas=(MAGNIFY_SIGMA,))
            self.timings["transfer"] = time.perf_counter() - stage_t
            stage_t = time.perf_counter()
            certified = {ref.label: self._certify_stage(ref) for ref in t1_refs}
            self.timings["certify"] = time.perf_counter() - stage_t
            table1 = self._table1(t1_refs, certified)
        sections = [None if s is None else s[0] for s in self._sections(t1_refs)]
        results = {
            "experiment": "szegedy2014", "profile": asdict(self.profile), "seed": self.seed,
            "table1": table1, "table2": table2, "table3": table3,
            "section3_units": sections[0], "section4_3_spectral": sections[1],
            "section4_2_adversarial_training": sections[2], "section_minimal": self._minimal(),
            "models": self.models, "attacks": {k: self._attack_summary(k) for k in self.attacks},
            "stages": [asdict(r) for r in self.runner.log],
            "facts": facts(self.profile, self.seed, self.device), "wall_time_s": {k: round(v, 2) for k, v in self.timings.items()},
        }
        results["wall_time_s"]["total"] = round(time.perf_counter() - t_start, 2)
        write_json_atomic(self.out / "results.json", portable_paths(results, self.out), sort_keys=False)
        results = json.loads((self.out / "results.json").read_text(encoding="utf-8"))  # strict JSON: NaN -> null
        write_report(build_report(results), self.out)  # from results.json alone
        return results

    def _sections(self, t1_refs: list[ModelRef]) -> list[tuple[dict[str, Any], Section] | None]:
        """§3 units, §4.3 spectral bounds (checked on Table 1's own adversarial pairs), §4.2 adversarial training."""
        p = self.profile
        sizes, s42 = p.sections, p.s42
        assert sizes is not None and s42 is not None
        kw = {"seed": self.seed, "device": self.device, "progress": self.progress}
        pairs = {ref.spec: self.attacks[ref.label][1] / "adversarial.safetensors" for ref in t1_refs
                 if ref.spec in SPECTRAL_MODELS and ref.label in self.attacks}
        out: list[tuple[dict[str, Any], Section] | None] = []
        for part, name, run in (("units", "units", lambda: units_section(self.runner, sizes, **kw)),
                                ("spectral", "spectral", lambda: spectral_section(self.runner, sizes, pairs=pairs, **kw)),
                                ("s42", "adversarial training",
                                 lambda: adversarial_training_section(self.runner, s42, **kw))):
            if part not in p.parts:
                out.append(None)
                continue
            t0 = time.perf_counter()
            out.append(run())
            self.timings[name] = time.perf_counter() - t0
        return out

    def _minimal(self) -> dict[str, Any] | None:
        """"How minimal is minimal?": exact minimal L∞ on small ReLU nets beside the attacks (None: not in parts)."""
        if "minimal" not in self.profile.parts:
            return None
        assert self.profile.minimal is not None
        t0 = time.perf_counter()
        out = minimal_section(self.runner, self.profile.minimal, seed=self.seed)
        self.timings["minimal"] = time.perf_counter() - t0
        return out
