"""What every reproduction shares above the stage layer (blindspots.stages): the Experiment base (output
folder, profile, seed, device, stage runner), the run's timing line, and the checkpoint paths results.json records
(portable: relative to the run folder or the model store). Profile selection and --set: overrides.py."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CheckpointError
from ..io import home
from ..parallel import World
from ..report.document import stage_time_line
from ..stages import StageRunner, StageSource, run_stage


def _silent(line: str) -> None:
    """The announce of a non-zero rank: rank 0 speaks for the run."""


def timing_line(results: Mapping[str, Any]) -> str:
    """One line for a run's summary: the stages' time in this run and their original compute time (a fully
    cached rerun takes seconds, but its results cost what the stages' first runs took)."""
    return stage_time_line(results.get("stages", []))


PATH_KEYS = ("checkpoint", "member_checkpoints")  # keys of results.json whose values are paths of checkpoint files
HOME = "$BLINDSPOTS_HOME"


def portable_paths(results: Any, run: Path, store_home: Path | None = None) -> Any:
    """`results` with each checkpoint path (PATH_KEYS) written relative to the run folder `run`, or as
    $BLINDSPOTS_HOME/… for one in the model store (`store_home`, default io.home()), so results.json names no folder
    of the machine that made it; a path elsewhere is kept. recorded_path reads one back."""
    def portable(text: str) -> str:
        path = Path(text).absolute()  # a stage folder of a run into a relative --out is relative to where it ran
        for root, prefix in ((run.absolute(), ""), ((store_home or home()).absolute(), f"{HOME}/")):
            if path.is_relative_to(root):
                return prefix + path.relative_to(root).as_posix()
        return text

    if isinstance(results, Mapping):
        return {k: (portable(v) if isinstance(v, str) else [portable(p) for p in v] if isinstance(v, list) else v)
                if k in PATH_KEYS else portable_paths(v, run, store_home) for k, v in results.items()}
    if isinstance(results, list):
        return [portable_paths(v, run, store_home) for v in results]
    return results


def recorded_path(text: str, run: Path) -> Path:
    """A checkpoint path as results.json records it (portable_paths), on this machine: under the run folder `run`,
    or the model store for $BLINDSPOTS_HOME/…; an absolute path (results of an older version) as it is."""
    if text.startswith(f"{HOME}/"):
        return home() / text[len(HOME) + 1:]
    return run / text


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
