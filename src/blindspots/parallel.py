"""Split per-image work across processes with torch.distributed (torchrun; gloo on CPU, nccl on GPU) so that
the result is identical to one process: images are cut into fixed global chunks, chunk i is computed by rank
i % world size with randomness seeded by its chunk index, and every rank gets all chunks back in order.

Nothing is pickled: chunks travel as safetensors bytes and broadcast objects as JSON. Communication only: the stage
layer (blindspots.stages.run_stage) decides that rank 0 holds the StageRunner, its lock and every file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import DeviceError, InputError

# How long a rank waits for the others at a collective (rank 0 may train models alone while the others wait).
TIMEOUT = timedelta(hours=int(os.environ.get("BLINDSPOTS_DIST_TIMEOUT_H", "12")))


@dataclass(frozen=True)
class World:
    """This process's place among the torchrun processes: rank, size, backend (None: one process)."""

    rank: int = 0
    size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether collectives run (several processes and an initialised process group)."""
        return self.size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def init_from_env(device: str = "cpu") -> World:
    """The World described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), its process group initialised
    once (gloo for a CPU device, nccl for CUDA, with this rank on cuda:LOCAL_RANK); World() when not started by
    torchrun (WORLD_SIZE unset or 1)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    dist = torch.distributed
    if not dist.is_available():
        raise DeviceError("this torch build has no torch.distributed; run without torchrun (one process).")
    if not dist.is_initialized():
        cuda = str(device).startswith("cuda")
        if cuda:
            if not torch.cuda.is_available():
                raise DeviceError("--device cuda under torchrun, but CUDA is not available; use --device cpu.")
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return World(dist.get_rank(), dist.get_world_size(), str(dist.get_backend()))


def shutdown(world: World | None = None) -> None:
    """Tear the process group down (at the end of a torchrun process; a no-op in one process)."""
    if world is not None and world.distributed:
        torch.distributed.destroy_process_group()


def _comm_device(world: World) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if world.backend == "nccl" else torch.device("cpu")


def _gather_bytes(blob: bytes, world: World) -> list[bytes]:
    """Every rank's bytes, in rank order, on every rank."""
    dev = _comm_device(world)
    data = torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.zeros(0, dtype=torch.uint8)
    size = torch.tensor([data.numel()], dtype=torch.long, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(world.size)]
    torch.distributed.all_gather(sizes, size)
    longest = max(int(s) for s in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=dev)
    padded[: data.numel()] = data.to(dev)
    parts = [torch.zeros_like(padded) for _ in range(world.size)]
    torch.distributed.all_gather(parts, padded)
    return [p[: int(s)].cpu().numpy().tobytes() for p, s in zip(parts, sizes)]


def sharded_map(fn: Callable[[int, slice], dict[str, torch.Tensor]], n: int, chunk: int,
                world: World | None = None, progress: Callable[[int, int], None] | None = None) -> dict[str, torch.Tensor]:
    """fn(chunk_index, rows) -> tensors with rows first, over fixed chunks of `chunk` rows out of `n` (chunk i is
    rows [i·chunk, min((i+1)·chunk, n))); this rank computes chunks i ≡ rank (mod size), and every rank returns all
    chunks concatenated in chunk order, on the CPU. Bitwise the one-process result when fn is deterministic per
    chunk (seed its randomness from the chunk index). progress(done, total), if given, is called on rank 0 after
    each of its chunks."""
    world = world or World()
    if chunk < 1:
        raise InputError(f"sharded_map's chunk must be a number of rows >= 1, got {chunk}; pass e.g. chunk=64.")
    starts = list(range(0, n, chunk))
    mine = [i for i in range(len(starts)) if i % world.size == world.rank] if world.distributed else \
        list(range(len(starts)))
    parts: dict[int, dict[str, torch.Tensor]] = {}
    for done, i in enumerate(mine, start=1):
        out = fn(i, slice(starts[i], min(starts[i] + chunk, n)))
        parts[i] = {k: v.detach().cpu() for k, v in out.items()}
        if progress is not None and world.is_main:
            progress(done, len(mine))
    if world.distributed:
        flat = {f"{i}/{k}": v.contiguous().clone() for i, p in parts.items() for k, v in p.items()}
        keys = {str(i): json.dumps(list(p)) for i, p in parts.items()}
        blob = st_save(flat, metadata=keys) if flat else b""
        parts = {}
        for raw in _gather_bytes(blob, world):
            if not raw:
                continue
            tensors, meta = st_load(raw), _metadata(raw)
            for i, names in meta.items():
                parts[int(i)] = {k: tensors[f"{i}/{k}"] for k in json.loads(names)}
    if not parts:
        return {}
    if sorted(parts) != list(range(len(starts))):
        raise RuntimeError(f"sharded_map got chunks {sorted(parts)} of {len(starts)}")
    first = parts[0]
    return {k: torch.cat([parts[i][k] for i in range(len(starts))]) for k in first}


def _metadata(raw: bytes) -> dict[str, str]:
    """The __metadata__ of a safetensors buffer (its JSON header)."""
    header = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + header]).get("__metadata__") or {}


def barrier(world: World | None = None) -> None:
    """Wait for every rank (no-op in one process)."""
    if world is not None and world.distributed:
        if world.backend == "nccl":
            torch.distributed.barrier(device_ids=[torch.cuda.current_device()])
        else:
            torch.distributed.barrier()


def broadcast_object(obj: object, world: World | None = None) -> object:
    """Rank 0's `obj` on every rank (itself in one process). obj must be JSON-serialisable (it travels as JSON,
    never pickled; tuples come back as lists, NaN stays NaN)."""
    if world is None or not world.distributed:
        return obj
    dev = _comm_device(world)
    blob = json.dumps(obj).encode() if world.is_main else b""
    size = torch.tensor([len(blob)], dtype=torch.long, device=dev)
    torch.distributed.broadcast(size, src=0)
    data = torch.zeros(int(size), dtype=torch.uint8, device=dev)
    if world.is_main and blob:
        data.copy_(torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(dev))
    torch.distributed.broadcast(data, src=0)
    return json.loads(data.cpu().numpy().tobytes().decode())


__all__ = ["World", "init_from_env", "shutdown", "sharded_map", "barrier", "broadcast_object"]
