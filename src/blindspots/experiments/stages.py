"""Resumable experiment stages, each cached under a key of its inputs.

A stage computes into a private temp folder; its result JSON is written last and the folder is then
renamed into place in one atomic step. So a run killed at any moment (even SIGKILL) leaves either a
finished stage or a temp folder that the next run deletes: never a half-written stage that looks done.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from ..errors import SpecError
from ..io import stable_hash, write_json_atomic

RESULT = "result.json"


@dataclass
class StageRecord:
    name: str
    key: str
    status: str  # "computed" | "cached"
    wall_s: float


@dataclass
class StageRunner:
    """Runs stages under `root/stages/<name>-<key>/`, skipping those already finished."""

    root: Path
    log: list[StageRecord] = field(default_factory=list)
    announce: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.stage_dir = self.root / "stages"
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.stage_dir.glob(".tmp-*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)

    def folder(self, name: str, inputs: dict[str, Any]) -> Path:
        return self.stage_dir / f"{_safe(name)}-{stable_hash(inputs)}"

    def run(self, name: str, inputs: dict[str, Any], compute: Callable[[Path], dict[str, Any]]) -> tuple[dict[str, Any], Path]:
        """Return (result, folder) of a stage; compute(tmp_folder) -> result only if not done before."""
        final = self.folder(name, inputs)
        key = final.name.rsplit("-", 1)[1]
        done = final / RESULT
        if done.exists():
            result = json.loads(done.read_text(encoding="utf-8"))
            self.log.append(StageRecord(name, key, "cached", 0.0))
            self.announce(f"  [cached]   {name}")
            return result, final
        tmp = self.stage_dir / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.announce(f"  [running]  {name}")
        t0 = time.perf_counter()
        result = compute(tmp)
        wall = time.perf_counter() - t0
        result = {**result, "_stage": {"name": name, "inputs": inputs, "wall_s": round(wall, 3)}}
        write_json_atomic(tmp / RESULT, result)
        if final.exists():  # a concurrent run finished first; keep its result
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, final)
        self.log.append(StageRecord(name, key, "computed", wall))
        self.announce(f"  [done]     {name}  ({wall:.1f} s)")
        return json.loads((final / RESULT).read_text(encoding="utf-8")), final


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


P = TypeVar("P")
MNIST_TEST = 10_000


def pick_profile(profiles: Mapping[str, P], name: str, n_attack: int | None = None) -> P:
    """The named run size, with its number of attacked test images overridden by n_attack if given."""
    if name not in profiles:
        raise SpecError(f"unknown profile {name!r}; choose one of {', '.join(profiles)}.")
    prof = profiles[name]
    if n_attack is not None:
        if not 0 < n_attack <= MNIST_TEST:
            raise SpecError(f"--n-attack must be between 1 and {MNIST_TEST} (the MNIST test set), got {n_attack}.")
        prof = replace(prof, n_attack=n_attack)  # type: ignore[type-var]
    return prof


class Experiment:
    """What every reproduction holds: output folder, run size, seed, device, the stage runner, and what
    its stages returned (model metadata, attack results with their files, wall times)."""

    def __init__(self, out: Path, profile: Any, seed: int = 0, device: str = "cpu", progress: bool = True,
                 announce: Callable[[str], None] = print) -> None:
        self.out, self.profile, self.seed, self.device, self.progress = out, profile, seed, device, progress
        self.runner = StageRunner(out, announce=announce)
        self.models: dict[str, dict[str, Any]] = {}
        self.attacks: dict[str, tuple[dict[str, Any], Path]] = {}
        self.timings: dict[str, float] = {}
