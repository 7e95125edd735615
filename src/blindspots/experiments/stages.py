"""What every reproduction shares above the stage layer (blindspots.stages): the Experiment base (output
folder, profile, seed, device, stage runner) and the run's timing line. Profile selection and --set: overrides.py;
the checkpoint paths results.json records: paths.py."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CheckpointError
from ..parallel import World
from ..report.document import stage_time_line
from ..stages import StageRunner, StageSource, run_stage


def _silent(line: str) -> None:
    """The announce of a non-zero rank: rank 0 speaks for the run."""


def timing_line(results: Mapping[str, Any]) -> str:
    """One line for a run's summary: the stages' time in this run and their original compute time (a fully
    cached rerun takes seconds, but its results cost what the stages' first runs took)."""
    return stage_time_line(results.get("stages", []))


class Experiment:
    """What every reproduction holds: output folder, run size, seed, device, the stage runner, and what
    its stages returned (model metadata, attack results with their files, wall times).

    Under torchrun (`world` of several processes) only rank 0 holds the output folder's StageRunner and writes;
    the other ranks hold a silent runner on a scratch folder and take part in collective stages (`stage`)."""

    stage_sources: Mapping[str, StageSource] = {}  # what each kind of its stages runs; others: the whole package

    def __init__(self, out: Path, profile: Any, seed: int = 0, device: str = "cpu", progress: bool = True,
                 announce: Callable[[str], None] = print, world: World | None = None) -> None:
        self.world = world or World()
        if not self.world.is_main:
            self._scratch = tempfile.TemporaryDirectory(prefix=f"blindspots-rank{self.world.rank}-")
            out, progress, announce = Path(self._scratch.name), False, _silent
        self.out, self.profile, self.seed, self.device, self.progress = out, profile, seed, device, progress
        self.runner = StageRunner(out, announce=announce, sources=self.stage_sources)
        self.models: dict[str, dict[str, Any]] = {}
        self.attacks: dict[str, tuple[dict[str, Any], Path]] = {}
        self.timings: dict[str, float] = {}
        self._checked: dict[str, nn.Module] = {}

    def stage(self, name: str, inputs: dict[str, Any], compute: Callable[[Path], dict[str, Any]], *,
              collective: bool = False) -> tuple[dict[str, Any], Path]:
        """runner.run in one process; under torchrun rank 0's cached or computed result on every rank, computed by
        every rank together (collective: compute goes through parallel.sharded_map) or by rank 0 alone."""
        return run_stage(self.runner, self.world, name, inputs, compute, collective=collective)

    def load_checkpoint_checked(self, stem: str | os.PathLike[str], spec: str, expected_sha256: str | None = None) -> nn.Module:
        """The model stored at `stem` (.json + .safetensors) on this run's device, loaded once per run: its spec,
        tensor shapes and weights' sha256 checked by load_checkpoint, and, given `expected_sha256` (what the train
        stage recorded), refused if the checkpoint was replaced since that stage ran."""
        from ..models.checkpoint import load_checkpoint

        path = Path(stem)
        key = str(path.with_suffix("") if path.suffix in (".safetensors", ".json") else path)
        if key not in self._checked:
            model, meta = load_checkpoint(key, spec, self.device)
            if expected_sha256 is not None and meta["weights_sha256"] != expected_sha256:
                raise CheckpointError(f"checkpoint {key}.safetensors changed since the stage that trained it ran; "
                                      f"delete {self.runner.stage_dir} to start over.")
            self._checked[key] = model
        return self._checked[key]
