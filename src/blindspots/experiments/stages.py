"""What every reproduction shares above the stage layer (blindspots.stages): the Experiment base (output
folder, profile, seed, device, stage runner), profile selection with --set overrides, the run's timing line."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from ..errors import CheckpointError, SpecError
from ..parallel import World
from ..report.document import stage_time_line
from ..stages import StageRunner, StageSource, run_stage


def _silent(line: str) -> None:
    """The announce of a non-zero rank: rank 0 speaks for the run."""


def timing_line(results: Mapping[str, Any]) -> str:
    """One line for a run's summary: the stages' time in this run and their original compute time (a fully
    cached rerun takes seconds, but its results cost what the stages' first runs took)."""
    return stage_time_line(results.get("stages", []))


P = TypeVar("P")
MNIST_TEST = 10_000


def pick_profile(profiles: Mapping[str, P], name: str, n_attack: int | None = None,
                 overrides: Mapping[str, str] | None = None) -> P:
    """The named run size, with its number of attacked test images overridden by n_attack if given, and any
    field overridden from text (`--set FIELD=VALUE`: a number, true/false, none, or a comma-separated list)."""
    if name not in profiles:
        raise SpecError(f"unknown profile {name!r}; choose one of {', '.join(profiles)}.")
    prof = profiles[name]
    if n_attack is not None:
        if not 0 < n_attack <= MNIST_TEST:
            raise SpecError(f"--n-attack must be between 1 and {MNIST_TEST} (the MNIST test set), got {n_attack}.")
        prof = replace(prof, n_attack=n_attack)  # type: ignore[type-var]
    for key, text in (overrides or {}).items():
        prof = _override(prof, key.split("."), text, key)
    return prof


def _override(obj: Any, path: list[str], text: str, key: str) -> Any:
    """`obj` with the field at `path` (a nested profile field for a dotted key, e.g. s42.seeds) set from `text`."""
    if len(path) == 1:
        return replace(obj, **{path[0]: _profile_value(obj, path[0], text, key)})
    fields = {f.name for f in dataclasses.fields(obj)}
    inner = getattr(obj, path[0], None) if path[0] in fields else None
    if inner is None or not dataclasses.is_dataclass(inner):
        raise SpecError(f"--set {key}=…: the profile has no group {path[0]!r}; groups: "
                        f"{', '.join(f for f in fields if dataclasses.is_dataclass(getattr(obj, f)))}.")
    return replace(obj, **{path[0]: _override(inner, path[1:], text, key)})


def _profile_value(prof: Any, key: str, text: str, full: str | None = None) -> Any:
    """`text` read as the type of the profile field `key` (its annotation)."""
    fields = {f.name: f for f in dataclasses.fields(prof)}
    if key not in fields or key == "name":
        names = ", ".join(f for f in fields if f != "name")
        raise SpecError(f"--set {full or key}=…: no field {key!r} there; fields: {names}.")
    kind = str(fields[key].type)
    t = text.strip()
    try:
        if t.lower() == "none" and "None" in kind:
            return None
        if "tuple" in kind:
            items = tuple(v.strip() for v in t.split(",") if v.strip())
            return tuple(float(v) for v in items) if "tuple[float" in kind else items
        if kind.startswith("bool"):
            if t.lower() not in ("true", "false", "1", "0"):
                raise ValueError(t)
            return t.lower() in ("true", "1")
        if "int" in kind:
            return int(t)
        if "float" in kind:
            return float(t)
        return t
    except ValueError:
        raise SpecError(f"--set {full or key}={text}: expected a value of type {kind}.") from None


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
