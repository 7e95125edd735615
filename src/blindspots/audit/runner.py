"""Stages of an audit across processes: rank 0 holds the StageRunner (lock, cache, files); every rank computes the
per-image stages together through parallel.sharded_map and gets rank 0's stage result back, so a cached stage is
skipped by all of them and only rank 0 writes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import parallel
from ..experiments.stages import RESULT, StageRunner
from .config import CHUNK

Compute = Callable[[Path | None], dict[str, Any]]


def chunk_seed(seed: int, chunk: int, salt: int = 0) -> int:
    """The seed of one chunk's randomness, from the run's seed and the chunk's index only (never the world size);
    `salt` tells apart independent draws of one chunk (e.g. one per ε)."""
    return (seed * 100_003 + chunk) * 1_009 + salt


class AuditRunner:
    """StageRunner on rank 0, collective computation everywhere; `announce` prints on rank 0 only."""

    def __init__(self, out: Path, world: parallel.World, announce: Callable[[str], None] = print,
                 progress: bool = True) -> None:
        self.world = world
        self._say = announce
        self.progress = progress
        self.stages = StageRunner(out, announce=announce) if world.is_main else None

    def announce(self, line: str) -> None:
        if self.world.is_main:
            self._say(line)

    def _cached(self, name: str, inputs: dict[str, Any]) -> bool:
        assert self.stages is not None
        path = self.stages.folder(name, inputs) / RESULT
        try:
            return isinstance(json.loads(path.read_text(encoding="utf-8")).get("_stage"), dict)
        except (OSError, ValueError, AttributeError):
            return False

    def run(self, name: str, inputs: dict[str, Any], compute: Compute, *,
            collective: bool = True) -> tuple[dict[str, Any], Path]:
        """The stage's result and folder. `collective`: every rank runs compute (it calls sharded_map); else rank 0
        alone computes. compute(folder) may write files into folder, which is None on ranks other than 0."""
        cached = parallel.broadcast_object(self._cached(name, inputs) if self.stages else None, self.world)
        if self.stages is not None:
            def guarded(folder: Path) -> dict[str, Any]:
                if cached and collective and self.world.size > 1:  # the other ranks are not computing with us
                    raise RuntimeError(f"stage {name!r} was cached a moment ago and no longer is; rerun the audit")
                return compute(folder)

            result, folder = self.stages.run(name, inputs, guarded)
        else:
            if not cached and collective:
                compute(None)
            result, folder = {}, Path()
        result, folder_s = parallel.broadcast_object((result, str(folder)), self.world)  # type: ignore[misc]
        return result, Path(folder_s)

    def map(self, fn: Callable[[int, slice], dict[str, torch.Tensor]], n: int, desc: str) -> dict[str, torch.Tensor]:
        """parallel.sharded_map over fixed chunks of CHUNK images, announcing chunks done and an ETA on rank 0."""
        total = -(-n // CHUNK)
        mine = len(range(self.world.rank, total, self.world.size))
        t0 = time.perf_counter()
        state = {"done": 0, "said": t0}
        every = 2.0 if self.progress else 15.0  # without --no-progress a line per chunk, else one now and then

        def timed(i: int, rows: slice) -> dict[str, torch.Tensor]:
            out = fn(i, rows)
            state["done"] += 1
            now = time.perf_counter()
            if state["done"] < mine and now - state["said"] > every:
                state["said"] = now
                self.announce(f"    {desc}: {state['done']}/{mine} chunks in {now - t0:.0f} s, "
                              f"ETA {(now - t0) / state['done'] * (mine - state['done']):.0f} s")
            return out

        return parallel.sharded_map(timed, n, CHUNK, self.world)


def save_tensors(folder: Path | None, name: str, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors into a stage folder (rank 0 only: folder is None elsewhere), as safetensors."""
    if folder is None:
        return
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / name))


def load_tensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / name))


__all__ = ["AuditRunner", "chunk_seed", "save_tensors", "load_tensors"]
