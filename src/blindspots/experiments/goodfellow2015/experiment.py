"""`blindspots reproduce goodfellow2015`: the experiment and its run. Its stages (each cached by a key of its inputs,
see blindspots.stages) live in one module per section, mixed in here: train the models (`training`: maxout nets by
the early-stopping protocol, one stage per phase and seed), the logistic regression (`logreg`), FGSM on each at a
list of ε with re-verification from disk, and transfer (`fgsm`), rubbish inputs (`rubbish`), the ensemble and the
L1 arms (`ensemble_l1`); then results.json and the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...data import load_mnist
from ...io import write_json_atomic
from ...models.zoo import TwoClassLogits
from ..paths import portable_paths
from ..stages import Experiment
from . import figures
from .common import LOGREG, LOGREG_LABEL, PAPER, logreg_data, nets
from .ensemble_l1 import FixedStages
from .fgsm import FgsmStages
from .findings import COMPARISONS, facts, findings
from .logreg import LogregStages
from .profiles import Profile
from .report import build_report
from .rubbish import RubbishStages
from .training import TrainingStages, paired_tests, split_rows
from ...report.document import write_report
from ...stages import StageSource

# What each kind of stage runs (stages.StageSource): the section module holding its compute, with what it imports, and
# what loads the models it reads. Every stage reads earlier stages' output under a key of its hash (weights_sha256,
# file_sha256), so none needs another's parts. tests/test_stage_sources.py traces real tiny runs of these kinds.
_PKG = "blindspots.experiments.goodfellow2015"
_LOAD = (f"{_PKG}.common", "blindspots.experiments.stages", "blindspots.models.store", "blindspots.models.zoo")
_LOADER = ("experiments/goodfellow2015/training.py",)  # TrainingStages._load, which every consumer of a net calls
_TRAINING = StageSource(modules=(f"{_PKG}.training", *_LOAD))
_FGSM = StageSource(modules=(f"{_PKG}.fgsm", *_LOAD), files=_LOADER)
STAGE_SOURCES = {
    "early-stop ": _TRAINING, "train ": _TRAINING,
    "fixed ": _TRAINING.with_(files=("experiments/goodfellow2015/ensemble_l1.py",)),  # its compute lives there
    f"train {LOGREG}": StageSource(modules=(f"{_PKG}.logreg", *_LOAD)),
    "fgsm ": _FGSM, "transfer": _FGSM,
    "ensemble": StageSource(modules=(f"{_PKG}.ensemble_l1", *_LOAD), files=_LOADER),
    "rubbish": StageSource(modules=(f"{_PKG}.rubbish", *_LOAD), files=_LOADER),
}


class Goodfellow2015(TrainingStages, LogregStages, FgsmStages, FixedStages, RubbishStages, Experiment):
    """The experiment: holds the profile, the stage runner, and what each stage returned."""

    profile: Profile
    stage_sources = STAGE_SOURCES

    # ---- the whole run ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t_start = time.perf_counter()
        all_nets = nets(self.profile)
        runs: dict[str, list[dict[str, Any]]] = {}
        jobs = [(net, s) for net in all_nets for s in (self._seeds(net) if net.is_maxout else [self.seed])]
        for net, seed in tqdm(jobs, desc="train models (net, seed)", unit="model", disable=not self.progress):
            t = time.perf_counter()
            result = self._protocol_stages(net, seed) if net.is_maxout else self._store_stage(net)
            runs.setdefault(net.key, []).append(result)
            self.timings[f"train {net.key} s{seed}"] = time.perf_counter() - t
        self.models = {k: v[0] for k, v in runs.items()}
        self.models[LOGREG], logreg_folder = self._logreg_stage()

        t = time.perf_counter()
        loaders: dict[str, Callable[[], nn.Module]] = {net.key: (lambda net=net: self._load(net)) for net in all_nets}

        def test_data() -> tuple[Tensor, Tensor, np.ndarray]:
            d = load_mnist("test", subset=self.profile.n_attack)
            return d.images, d.labels, d.indices

        for net in tqdm(all_nets, desc="FGSM", disable=not self.progress, leave=False):
            self.attacks[net.key] = self._fgsm_stage(net.key, net.label, loaders[net.key], test_data,
                                                     net.independent_outputs, self.profile.n_attack)
        self.attacks[LOGREG] = self._fgsm_stage(LOGREG, LOGREG_LABEL,
                                                lambda: TwoClassLogits(self._load_logreg(logreg_folder)),
                                                lambda: logreg_data("test"), False, None)
        self.timings["fgsm"] = time.perf_counter() - t

        t = time.perf_counter()
        keys = [n.key for n in all_nets]
        transfer = self._transfer_stage(keys, loaders)
        rubbish = self._rubbish_stage(loaders)
        self.timings["transfer and rubbish"] = time.perf_counter() - t

        rows = split_rows(self.profile)[0] if self.profile.ensemble_members or self.profile.l1_coefficients else None
        t = time.perf_counter()
        ensemble = self._ensemble_section(rows) if rows is not None else None
        if ensemble is not None:
            self.timings["ensemble"] = time.perf_counter() - t
        t = time.perf_counter()
        l1 = self._l1_section(rows) if rows is not None else None
        if l1 is not None:
            self.timings["L1 decay"] = time.perf_counter() - t

        t = time.perf_counter()
        fig_paths = figures.draw_all(self.out, self.attacks, self._load_logreg(logreg_folder), runs)
        self.timings["figures"] = time.perf_counter() - t
        attacks = {k: v[0] for k, v in self.attacks.items()}
        curves = {k: [{"seed": r["seed"], "early_stop": r["early_stop"], "retrain": r["curve"]} for r in v]
                  for k, v in runs.items() if "early_stop" in v[0]}
        paired = paired_tests(runs, COMPARISONS)
        results = {
            "experiment": PAPER, "profile": asdict(self.profile), "seed": self.seed,
            "models": self.models, "seeds": {k: [_strip(r) for r in v] for k, v in runs.items()}, "curves": curves,
            "fgsm": attacks, "transfer": transfer, "rubbish": rubbish, "ensemble": ensemble, "l1_decay": l1,
            "paired_tests": paired,
            "findings": findings(self.models, attacks, transfer, rubbish, curves, ensemble, l1, paired),
            "figures": fig_paths, "stages": [asdict(r) for r in self.runner.log],
            "facts": facts(self.profile, self.seed, self.device),
            "wall_time_s": {k: round(v, 2) for k, v in self.timings.items()},
        }
        results["wall_time_s"]["total"] = round(time.perf_counter() - t_start, 2)
        results = portable_paths(results, self.out)  # checkpoints relative to the run folder or the model store
        write_json_atomic(self.out / "results.json", results, sort_keys=False)  # the report reads it in run order
        write_report(build_report(results), self.out)
        return results


def _strip(run: dict[str, Any]) -> dict[str, Any]:
    """A seed's model summary without its curves (those live under results["curves"])."""
    return {k: v for k, v in run.items() if k not in ("curve", "early_stop")}
