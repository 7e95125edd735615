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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
