"""Resumable experiment stages, each cached under a key of its inputs and of the code that computes them.

A stage computes into a private temp folder; its result JSON is written last and the folder is then
renamed into place in one atomic step. So a run killed at any moment (even SIGKILL) leaves either a
finished stage or a temp folder that a later run deletes: never a half-written stage that looks done. A
stage folder whose result.json is missing or damaged is moved aside and recomputed. One run at a time holds
an output folder (a lock file), so a second run into the same folder stops with a clear error.
"""

from __future__ import annotations

import dataclasses

import fcntl
import json
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from ..errors import CheckpointError, OutputError, SpecError
from ..io import output_folder, safe_name, source_hash, stable_hash, write_json_atomic
from ..parallel import World, run_stage
from ..report.document import stage_time_line

RESULT = "result.json"
LOCK = ".blindspots.lock"
BROKEN = ".broken"  # stage folders with a missing or damaged result.json are moved here
# Stage results depend on all the package's code except the report and the command line, which are re-rendered
# from the stage results on every run (the audit's and the papers' report, findings and figures code too: a
# reworded report or a redrawn figure never retrains a model).
STAGE_SOURCE_EXCLUDE = ("report", "cli", "audit/report.py", "audit/figures.py", "experiments/szegedy2014/report.py",
                        "experiments/goodfellow2015/report.py", "experiments/goodfellow2015/findings.py",
                        "experiments/goodfellow2015/figures.py")


def stage_source_hash() -> str:
    """Hash of the package source that stage results depend on (part of every stage key)."""
    return source_hash(exclude=STAGE_SOURCE_EXCLUDE)


@dataclass
class StageRecord:
    """One stage of a run: `wall_s` is its time in this run (reading it back, if cached), `compute_s` the time
    its computation took when it ran (this run or an earlier one)."""

    name: str
    key: str
    status: str  # "computed" | "cached"
    wall_s: float
    compute_s: float | None = None


@dataclass
class StageRunner:
    """Runs stages under `root/stages/<name>-<key>/`, skipping those already finished; holds root's lock."""

    root: Path
    log: list[StageRecord] = field(default_factory=list)
    announce: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.root = output_folder(self.root, "output folder")
        lock = _acquire(self.root)
        weakref.finalize(self, _release, lock)
        self.stage_dir = self.root / "stages"
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.stage_dir.glob(".tmp-*"):  # left by a killed run; a live run's are kept
            pid = stale.name.rsplit("-", 1)[-1]
            if not (pid.isdigit() and _alive(int(pid))):
                shutil.rmtree(stale, ignore_errors=True)

    def folder(self, name: str, inputs: dict[str, Any]) -> Path:
        """The stage's folder: its name and a hash of its inputs and of the code (a code fix recomputes it)."""
        return self.stage_dir / f"{safe_name(name)}-{stable_hash({'inputs': inputs, 'source': stage_source_hash()})}"

    def run(self, name: str, inputs: dict[str, Any], compute: Callable[[Path], dict[str, Any]]) -> tuple[dict[str, Any], Path]:
        """Return (result, folder) of a stage; compute(tmp_folder) -> result only if not done before."""
        final = self.folder(name, inputs)
        key = final.name.rsplit("-", 1)[1]
        if final.exists():
            t0 = time.perf_counter()
            result = self._finished(name, final)
            if result is not None:
                compute_s = result["_stage"].get("wall_s")
                self.log.append(StageRecord(name, key, "cached", time.perf_counter() - t0,
                                            compute_s if isinstance(compute_s, (int, float)) else None))
                self.announce(f"  [cached]   {name}")
                return result, final
        tmp = self.stage_dir / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.announce(f"  [running]  {name}")
        t0 = time.perf_counter()
        result = compute(tmp)
        wall = time.perf_counter() - t0
        result = {**result, "_stage": {"name": name, "inputs": inputs, "wall_s": round(wall, 3),
                                       "source_sha256": stage_source_hash()}}
        write_json_atomic(tmp / RESULT, result)
        if final.exists():  # a concurrent run finished first; keep its result
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, final)
        self.log.append(StageRecord(name, key, "computed", wall, wall))
        self.announce(f"  [done]     {name}  ({wall:.1f} s)")
        return json.loads((final / RESULT).read_text(encoding="utf-8")), final

    def cached(self, name: str, inputs: dict[str, Any]) -> bool:
        """Whether `run(name, inputs, ...)` would return a stored result without computing (nothing is moved)."""
        return _stored(self.folder(name, inputs))[0] is not None

    def _finished(self, name: str, final: Path) -> dict[str, Any] | None:
        """The stage's stored result; None (after moving the folder aside and saying so) if it is missing or
        damaged, so the stage is recomputed instead of crashing every rerun."""
        result, why = _stored(final)
        if result is not None:
            return result
        aside = self.stage_dir / BROKEN / f"{final.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        aside.parent.mkdir(exist_ok=True)
        os.replace(final, aside)
        self.announce(f"  [redo]     {name}: its folder {why}; moved it to {aside.relative_to(self.root)}, recomputing")
        return None


def _stored(final: Path) -> tuple[dict[str, Any] | None, str]:
    """A stage folder's stored result, or None and why it cannot be used."""
    try:
        result = json.loads((final / RESULT).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "has no result.json"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None, "has a truncated or unreadable result.json"
    if isinstance(result, dict) and isinstance(result.get("_stage"), dict):
        return result, ""
    return None, "has a result.json that is not a stage record"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Output-folder locks held by this process: resolved folder -> [lock file descriptor, number of runners].
# Runners of one process share the lock; it is released when the last of them is garbage-collected (or the
# process exits, however it ends: the kernel drops a flock with its last descriptor).
_HELD: dict[str, list[int]] = {}


def _acquire(root: Path) -> str:
    key = str(root.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        return key
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise OutputError(f"{root} is in use by another blindspots run (pid {other}); wait for it to finish "
                          "or give this run another --out folder.") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = [fd, 1]
    return key


def _release(key: str) -> None:
    entry = _HELD.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _HELD[key]
        os.close(entry[0])


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
        prof = replace(prof, **{key: _profile_value(prof, key, text)})  # type: ignore[type-var]
    return prof


def _profile_value(prof: Any, key: str, text: str) -> Any:
    """`text` read as the type of the profile field `key` (its annotation, or its current value's type)."""
    fields = {f.name: f for f in dataclasses.fields(prof)}
    if key not in fields or key == "name":
        names = ", ".join(f for f in fields if f != "name")
        raise SpecError(f"--set {key}=…: the profile has no field {key!r}; fields: {names}.")
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
        raise SpecError(f"--set {key}={text}: expected a value of type {kind}.") from None


class Experiment:
    """What every reproduction holds: output folder, run size, seed, device, the stage runner, and what
    its stages returned (model metadata, attack results with their files, wall times).

    Under torchrun (`world` of several processes) only rank 0 holds the output folder's StageRunner and writes;
    the other ranks hold a silent runner on a scratch folder and take part in collective stages (`stage`)."""

    def __init__(self, out: Path, profile: Any, seed: int = 0, device: str = "cpu", progress: bool = True,
                 announce: Callable[[str], None] = print, world: World | None = None) -> None:
        self.world = world or World()
        if not self.world.is_main:
            self._scratch = tempfile.TemporaryDirectory(prefix=f"blindspots-rank{self.world.rank}-")
            out, progress, announce = Path(self._scratch.name), False, _silent
        self.out, self.profile, self.seed, self.device, self.progress = out, profile, seed, device, progress
        self.runner = StageRunner(out, announce=announce)
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
