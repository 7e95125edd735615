"""Split per-image work across processes with torch.distributed (torchrun; gloo on CPU, nccl on GPU) so that
the result is identical to one process: images are cut into fixed global chunks, chunk i is computed by rank
i % world size with randomness seeded by its chunk index, and every rank gets all chunks back in order.

Skeleton: single-process only until the distributed part lands (issue 12)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class World:
    """This process's place among the torchrun processes: rank, size, backend (None: one process)."""

    rank: int = 0
    size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str = "cpu") -> World:
    """The World described by torchrun's environment (RANK, WORLD_SIZE), its process group initialised;
    World() when not started by torchrun."""
    return World()


def sharded_map(fn: Callable[[int, slice], dict[str, torch.Tensor]], n: int, chunk: int,
                world: World | None = None) -> dict[str, torch.Tensor]:
    """fn(chunk_index, rows) -> tensors with rows first, over fixed chunks of `chunk` rows out of `n`; this rank
    computes its chunks, and every rank returns all chunks concatenated in order."""
    parts = [fn(i, slice(start, min(start + chunk, n))) for i, start in enumerate(range(0, n, chunk))]
    if not parts:
        return {}
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def barrier(world: World | None = None) -> None:
    """Wait for every rank (no-op in one process)."""


def broadcast_object(obj: object, world: World | None = None) -> object:
    """Rank 0's `obj` on every rank (itself in one process)."""
    return obj


__all__ = ["World", "init_from_env", "sharded_map", "barrier", "broadcast_object"]
