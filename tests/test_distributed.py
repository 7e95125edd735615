"""torch.distributed sharding (blindspots.parallel): two gloo processes under torchrun attack real MNIST with a
real trained model (PGD L∞ with a per-chunk random start, minimal L-BFGS) through sharded_map and a resumable
run_stage, and get bitwise what one process gets; the stage is written once, by rank 0, and a rerun reads it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from blindspots.models import train
from blindspots.parallel import World, broadcast_object, sharded_map
from blindspots.stages import run_stage

SCRIPT = r'''
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from safetensors.torch import save_file
from blindspots.attacks import Misclassification, run_attack
from blindspots.data import load_mnist
from blindspots.stages import StageRunner
from blindspots.models.checkpoint import load_checkpoint
from blindspots.parallel import barrier, broadcast_object, init_from_env, sharded_map, shutdown
from blindspots.stages import run_stage

checkpoint, out = sys.argv[1], Path(sys.argv[2])
world = init_from_env("cpu")
model, _ = load_checkpoint(checkpoint, "FC100-100-10")
d = load_mnist("test", subset=60)
crit = Misclassification(d.labels)

def chunk(i, rows):
    x, c = d.images[rows], crit.subset(rows)
    p = run_attack("pgd", model, x, c, [0.1], steps=10, seed=7 * 100_003 + i)
    m = run_attack("lbfgs", model, x, c, search_steps=3)
    return {"pgd_x": p.x_adv[0], "pgd_ok": p.success[0], "lbfgs_x": m.x_adv, "lbfgs_ok": m.success,
            "rank": torch.full((rows.stop - rows.start,), world.rank)}

def compute(folder):
    t = sharded_map(chunk, 60, 16, world)
    if world.is_main:
        save_file({k: v.contiguous() for k, v in t.items()}, str(folder / "t.safetensors"))
    return {"pgd": int(t["pgd_ok"].sum()), "lbfgs": int(t["lbfgs_ok"].sum()), "ranks": t["rank"].tolist()}

runner = StageRunner(out / "run", announce=lambda s: None) if world.is_main else None
result, folder = run_stage(runner, world, "attack", {"n": 60}, compute)
barrier(world)
echo = broadcast_object({"from": world.rank, "nan": float("nan")}, world)
line = {"rank": world.rank, "size": world.size, "backend": world.backend, "result": result, "folder": str(folder),
        "echo_from": echo["from"], "nan_kept": echo["nan"] != echo["nan"]}
(out / f"rank{world.rank}.json").write_text(json.dumps(line))
shutdown(world)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [
        str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH")]))}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def checkpoint(one_thread: None) -> str:
    """A real FC100-100-10 on MNIST, stored as .json + .safetensors for the worker processes to load."""
    return str(train("FC100-100-10", train_subset=2000, epochs=3, progress=False).path)


def test_two_gloo_processes_match_one_process_bitwise(tmp_path: Path, checkpoint: str) -> None:
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _run([str(script), checkpoint, str(one)], tmp_path)
    def torchrun() -> None:
        _run(["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
              "--master-port", str(_free_port()), str(script), checkpoint, str(two)], tmp_path)

    torchrun()
    single = json.loads((one / "rank0.json").read_text())
    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert single["size"] == 1 and single["backend"] is None
    assert [r["size"] for r in ranks] == [2, 2] and {r["backend"] for r in ranks} == {"gloo"}
    assert all(r["echo_from"] == 0 and r["nan_kept"] for r in ranks)  # broadcast_object: rank 0's object
    assert ranks[0]["result"] == ranks[1]["result"] and ranks[0]["folder"] == ranks[1]["folder"]
    # chunk i of 16 rows was computed by rank i % 2: 4 chunks, rows 0-15 and 32-47 on rank 0
    assert ranks[0]["result"]["ranks"] == [0] * 16 + [1] * 16 + [0] * 16 + [1] * 12
    assert single["result"]["ranks"] == [0] * 60
    assert ranks[0]["result"]["pgd"] == single["result"]["pgd"] and ranks[0]["result"]["pgd"] > 0
    a = load_file(str(Path(single["folder"]) / "t.safetensors"))
    b = load_file(str(Path(ranks[0]["folder"]) / "t.safetensors"))
    for key in ("pgd_x", "pgd_ok", "lbfgs_x", "lbfgs_ok"):
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["pgd_x"], a["lbfgs_x"])
    stages = list((two / "run" / "stages").iterdir())
    assert [p.name for p in stages if not p.name.startswith(".")] == [Path(ranks[0]["folder"]).name]
    assert not [p for p in stages if p.name.startswith(".tmp")]
    # a rerun under torchrun finds rank 0's stage cached: nobody recomputes, both ranks get the stored result
    # (a recomputed stage would be a new folder renamed into place: its file would be written anew)
    stage_file = two / "run" / "stages" / Path(ranks[0]["folder"]).name / "t.safetensors"
    stamp = (stage_file.stat().st_ino, stage_file.stat().st_mtime_ns)
    torchrun()
    again = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert again[0]["result"] == again[1]["result"] == ranks[0]["result"]
    assert (stage_file.stat().st_ino, stage_file.stat().st_mtime_ns) == stamp, "a cached stage must not be recomputed"


def test_one_process_helpers_are_plain(tmp_path: Path) -> None:
    calls: list[tuple[int, int, int]] = []

    def fn(i: int, rows: slice) -> dict[str, torch.Tensor]:
        calls.append((i, rows.start, rows.stop))
        return {"v": torch.arange(rows.start, rows.stop), "sq": torch.arange(rows.start, rows.stop) ** 2}

    seen: list[tuple[int, int]] = []
    out = sharded_map(fn, 10, 4, World(), progress=lambda done, total: seen.append((done, total)))
    assert calls == [(0, 0, 4), (1, 4, 8), (2, 8, 10)] and seen == [(1, 3), (2, 3), (3, 3)]
    assert torch.equal(out["v"], torch.arange(10)) and list(out) == ["v", "sq"]
    assert sharded_map(fn, 0, 4) == {}
    assert broadcast_object({"a": 1}) == {"a": 1}
    from blindspots.stages import StageRunner

    runner = StageRunner(tmp_path / "r", announce=lambda s: None)
    result, folder = run_stage(runner, World(), "s", {"k": 1}, lambda f: {"x": 1})
    assert result["x"] == 1 and folder.parent == runner.stage_dir


def _audit_numbers(folder: Path) -> dict:
    """results.json of an audit less what may differ between runs (timings, stage log, facts naming processes)."""
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    return {k: v for k, v in results.items() if k not in ("facts", "stages", "wall_time_s")}


def test_audit_under_torchrun_matches_one_process(tmp_path: Path, checkpoint: str) -> None:
    """`torchrun --nproc-per-node 2 -m blindspots audit` over 2 chunks of images: the same results.json numbers as
    one process, and only rank 0 writes the report."""
    weights = str(Path(checkpoint).with_suffix(".safetensors"))
    args = ["audit", "--model", "FC100-100-10", "--weights", weights, "--images", "150", "--eps-linf", "0.1,0.2",
            "--eps-l2", "1,2", "--threads", "1", "--no-progress"]
    _run(["-m", "blindspots", *args, "--out", str(tmp_path / "one")], tmp_path)
    _run(["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
          str(_free_port()), "-m", "blindspots", *args, "--out", str(tmp_path / "two")], tmp_path)
    one, two = _audit_numbers(tmp_path / "one"), _audit_numbers(tmp_path / "two")
    assert one["data"]["n"] == 150 and one["models"]
    from blindspots.report.publish import result_differences

    assert result_differences(two, one) == []  # every number equal (timings such as the bounds' seconds left out)
    assert result_differences(one, two) == []
    assert (tmp_path / "two" / "report.html").is_file()
