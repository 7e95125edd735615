"""`reproduce szegedy2014 --profile quick` end to end on real MNIST, killed with SIGKILL mid-run and
resumed: finished stages are not recomputed, every table is in all three outputs, and the numbers obey
the facts that define them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from blindspots.attacks import TargetedMisclassification, load_adversarial
from blindspots.experiments.szegedy2014 import reproduce
from blindspots.models import load_model

N_ATTACK = 60  # fewer than the quick profile's 100, to keep the suite short


def _finished_stages(out: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*/result.json")}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, float]]:
    out = tmp_path_factory.mktemp("szegedy") / "run"
    cmd = [sys.executable, "-m", "blindspots", "reproduce", "szegedy2014", "--profile", "quick",
           "--n-attack", str(N_ATTACK), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    # kill as soon as the first attack stage has finished (all models trained by then)
    while time.time() < deadline and proc.poll() is None:
        if any(name.startswith("attack") for name in _finished_stages(out)):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed; the test needs a bigger run"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _finished_stages(out)
    results = reproduce(out, "quick", n_attack=N_ATTACK, progress=False, announce=lambda s: None)
    return out, results, before


def test_resume_recomputes_nothing_finished(run: tuple[Path, dict, dict[str, float]]) -> None:
    out, results, before = run
    assert any(k.startswith("attack") for k in before) and any(k.startswith("train") for k in before)
    after = _finished_stages(out)
    for name, mtime in before.items():
        assert after[name] == mtime, f"stage {name} was rewritten after the resume"
    log = {f"{s['name']}": s["status"] for s in results["stages"]}
    n_cached = sum(1 for s in results["stages"] if s["status"] == "cached")
    assert n_cached >= len(before)
    assert any(status == "computed" for status in log.values())
    assert not list((out / "stages").glob(".tmp-*")), "temp folders of the killed run were not cleaned up"


def test_every_table_is_in_all_three_files(run: tuple[Path, dict, dict[str, float]]) -> None:
    out, results, _ = run
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    disk = json.loads((out / "results.json").read_text())
    for title in ("Table 1", "Table 2", "Table 3"):
        assert title in md and title in page
    for key in ("table1", "table2", "table3"):
        assert disk[key] == results[key] and disk[key]
    assert len(disk["table1"]) == 6 and len(disk["table3"]["columns"]) == 3
    assert "data:image/png;base64," in page  # self-contained
    assert "| FC10(1e-4) |" in md and "| 7.4% |" in md  # paper column of FC10(1e-4) test error, from the reference file


def test_transfer_diagonal_equals_attack_success(run: tuple[Path, dict, dict[str, float]]) -> None:
    _, results, _ = run
    for key in ("table2", "table3"):
        table = results[key]
        for name in table["columns"]:
            row = table["rows"][name]
            attack_key = name if key == "table2" else next(k for k in results["attacks"] if _t3(k) == name)
            assert row["errors"][name] == pytest.approx(results["attacks"][attack_key]["success_rate"], abs=1e-9)


def _t3(label: str) -> str:
    return {"FC100-100-10 [P1]": "FC100-100-10", "FC123-456-10 [P1]": "FC123-456-10",
            "FC100-100-10' [P2]": "FC100-100-10'"}.get(label, label)


def test_gaussian_rows_stay_below_the_adversarial_diagonal(run: tuple[Path, dict, dict[str, float]]) -> None:
    _, results, _ = run
    for key in ("table2", "table3"):
        table = results[key]
        for gname, grow in table["rows"].items():
            if not gname.startswith("gaussian"):
                continue
            for col in table["columns"]:
                assert grow["errors"][col] < table["rows"][col]["errors"][col], (key, gname, col)


def test_adversarial_sets_reverify_from_disk(run: tuple[Path, dict, dict[str, float]]) -> None:
    out, results, _ = run
    folders = sorted((out / "stages").glob("attack*"))
    assert len(folders) == 9
    for folder in folders:
        meta = json.loads((folder / "result.json").read_text())
        inputs = meta["_stage"]["inputs"]
        model_row = results["models"][inputs["model"]]
        tm = load_model(model_row["spec"], split=model_row["split"], train_subset=10_000)
        assert tm.meta["weights_sha256"] == inputs["weights"]
        t = load_adversarial(folder / "adversarial.safetensors")
        with torch.no_grad():
            pred = tm.model(t["x_adv"]).argmax(dim=1)
        crit = TargetedMisclassification(t["target"], t["label"])
        assert torch.equal(crit.is_adversarial(tm.model(t["x_adv"]).detach()), t["success"].bool())
        assert torch.equal(pred, t["pred"])
        assert float(t["x_adv"].min()) >= 0.0 and float(t["x_adv"].max()) <= 1.0
        assert meta["success_rate"] > 0.9
