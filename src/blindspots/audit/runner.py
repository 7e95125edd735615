"""Stages of an audit across processes: rank 0 holds the StageRunner (lock, cache, files); every rank computes the
per-image stages together through parallel.sharded_map and gets rank 0's stage result back, so a cached stage is
skipped by all of them and only rank 0 writes."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import parallel
from ..progress import Eta
from ..stages import StageRunner, StageSource, run_stage
from .config import CHUNK

Compute = Callable[[Path | None], dict[str, Any]]


def chunk_seed(seed: int, chunk: int, salt: int = 0) -> int:
    """The seed of one chunk's randomness, from the run's seed and the chunk's index only (never the world size);
    `salt` tells apart independent draws of one chunk (e.g. one per ε)."""
    return (seed * 100_003 + chunk) * 1_009 + salt


# What each kind of audit stage runs (stages.StageSource): the audit module holding its compute, with what it imports,
# and the attacks it reaches through the registry (audit.common.attack -> attacks.run_attack, whose imports are not
# followed). A stage that starts from another's results (handed over in memory, not in its key) includes that
# stage's parts; the verdict reads them all. tests/test_stage_sources.py traces real tiny runs of these kinds.
# every stage after the clean one attacks through what audit.adaptive builds from it (BPDA, stand-ins), or stands down
# (audit.gradient_free)
_CLEAN = StageSource(modules=("blindspots.audit.attacks", "blindspots.audit.adaptive", "blindspots.attacks.standin",
                              "blindspots.audit.gradient_free"))
_MINIMAL_L2 = _CLEAN.with_(modules=("blindspots.attacks.lbfgs", "blindspots.attacks.deepfool",
                                     "blindspots.attacks.minimal", "blindspots.attacks.hopskipjump"))
_MINIMAL_LINF = _CLEAN.with_(modules=("blindspots.attacks.fgsm", "blindspots.attacks.pgd",
                                       "blindspots.attacks.hopskipjump"))
_CURVES = _MINIMAL_L2.with_(_MINIMAL_LINF)
_SANITY = _CURVES.with_(modules=("blindspots.audit.analysis", "blindspots.attacks.square"))
_BOUNDS = _MINIMAL_LINF.with_(modules=("blindspots.audit.bounds",))
AUDIT_STAGE_SOURCES = {
    "clean-": _CLEAN,
    "minimal-l2-": _MINIMAL_L2,
    "minimal-linf-": _MINIMAL_LINF,
    "curves-": _CURVES,
    "lipschitz-": _MINIMAL_L2.with_(modules=("blindspots.audit.analysis",)),
    "units-": StageSource(modules=("blindspots.audit.analysis",)),
    "sanity-": _SANITY,
    "transfer": _CURVES.with_(modules=("blindspots.audit.analysis",)),
    "bounds-": _BOUNDS,
    "verdict-": _SANITY.with_(_BOUNDS, modules=("blindspots.audit.verdict", "blindspots.audit.expectation")),
}


@contextmanager
def seeded_globals(seed: int) -> Iterator[None]:
    """torch's (CPU), numpy's and Python's global generators seeded, and restored afterwards: what a randomised
    model draws from (its randomness is then a function of the seed, so its audit is reproducible)."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class AuditRunner:
    """StageRunner on rank 0, collective computation everywhere; `announce` prints on rank 0 only."""

    def __init__(self, out: Path, world: parallel.World, announce: Callable[[str], None] = print,
                 progress: bool = True) -> None:
        self.world = world
        self._say = announce
        self.progress = progress
        self.stages = StageRunner(out, announce=announce, sources=AUDIT_STAGE_SOURCES) if world.is_main else None

    def announce(self, line: str) -> None:
        if self.world.is_main:
            self._say(line)

    def run(self, name: str, inputs: dict[str, Any], compute: Compute, *,
            collective: bool = True) -> tuple[dict[str, Any], Path]:
        """parallel.run_stage: the stage's result and folder on every rank. `collective`: every rank runs compute (it
        calls sharded_map); else rank 0 alone computes. compute(folder) may write files into folder, which is None
        on ranks other than 0 (they write nothing)."""
        main = self.world.is_main
        return run_stage(self.stages, self.world, name, inputs,
                                  lambda folder: compute(folder if main else None), collective=collective)

    def map(self, fn: Callable[[int, slice], dict[str, torch.Tensor]], n: int, desc: str,
            chunk: int = CHUNK) -> dict[str, torch.Tensor]:
        """parallel.sharded_map over fixed chunks of `chunk` images, announcing chunks done and an ETA on rank 0."""
        # a line every 2 s with progress bars on, every 15 s with --no-progress
        eta = Eta(desc, -(-n // chunk), self.announce, unit=" chunks", every_s=2.0 if self.progress else 15.0,
                  indent="    ")

        def progress(done: int, total: int) -> None:  # called on rank 0 after each of its chunks
            eta.total = total
            eta.step(done - eta.done)

        def seeded(i: int, rows: slice) -> dict[str, torch.Tensor]:  # a random model's draws: from (desc, chunk)
            with seeded_globals(chunk_seed(zlib.crc32(desc.encode()), i)):
                return fn(i, rows)

        return parallel.sharded_map(seeded, n, chunk, self.world, progress)


def save_tensors(folder: Path | None, name: str, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors into a stage folder (rank 0 only: folder is None elsewhere), as safetensors."""
    if folder is None:
        return
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / name))


def load_tensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / name))


__all__ = ["AUDIT_STAGE_SOURCES", "AuditRunner", "chunk_seed", "seeded_globals", "save_tensors", "load_tensors"]
