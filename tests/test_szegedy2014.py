"""`reproduce szegedy2014 --profile quick` end to end on real MNIST, killed with SIGKILL mid-run and
resumed: finished stages are not recomputed, every table is in all three outputs, the report is a function of
results.json alone, and the numbers obey the facts that define them (recomputed here from the models' logits)."""

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
from agreement import differences, report, szegedy_rules
from safetensors.torch import save_file

from blindspots.attacks import gaussian_noise, load_adversarial
from blindspots.data import load_mnist
from blindspots.experiments.szegedy2014 import PROFILES, build_report, reproduce
from blindspots.models import load_model
from blindspots.report.document import to_markdown

N_ATTACK = 60  # fewer than the quick profile's 100, to keep the suite short


def _finished_stages(out: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*/result.json")}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, float]]:
    out = tmp_path_factory.mktemp("szegedy") / "run"
    cmd = [sys.executable, "-m", "blindspots", "reproduce", "szegedy2014", "--profile", "quick",
           "--n-attack", str(N_ATTACK), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 1800  # a guard, not a timing: training the quick zoo takes minutes on a loaded machine
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
    assert to_markdown(build_report(disk)) == md  # the committed report can be checked against its results.json
    assert "certified lower bound" in md and "## How minimal is minimal?" in md
    for a in disk["attacks"].values():  # figures: paths relative to the run folder, stored in results.json
        for rel in a["figures"].values():
            assert not Path(rel).is_absolute() and f"]({rel})" in md and (out / rel).read_bytes()[:4] == b"\x89PNG"


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
        gaussian = [n for n, r in table["rows"].items() if r["kind"] == "gaussian"]
        assert len(gaussian) == 2 * (2 if key == "table2" else 1)  # both readings of each sigma
        for gname in gaussian:
            for col in table["columns"]:
                assert table["rows"][gname]["errors"][col] < table["rows"][col]["errors"][col], (key, gname, col)


def test_gaussian_controls_in_both_readings(run: tuple[Path, dict, dict[str, float]]) -> None:
    """Unclipped noise (the paper's reading) has RMS sigma and leaves the box; clipped noise is the same draw clipped;
    each cell is recomputed here from the column model's logits on noise drawn here."""
    out, results, _ = run
    md = (out / "report.md").read_text()
    table = results["table2"]
    base = results["attacks"]["FC100-100-10"]
    test, chosen = load_mnist("test"), torch.tensor(base["test_indices"])
    x, y = test.images[chosen], test.labels[chosen]
    draw = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    for sigma in (0.1, 0.3):
        free, clipped = table["rows"][f"gaussian({sigma:g}) unclipped"], table["rows"][f"gaussian({sigma:g}) clipped"]
        assert free["distortion"] == pytest.approx(sigma, rel=0.02) and clipped["distortion"] < 0.9 * sigma
        assert free["outside_box"] > 0.3 and clipped["outside_box"] == 0
        assert free["paper_row"] == f"gaussian({sigma:g})" and clipped["paper_row"] is None
        noisy = x + sigma * draw
        assert torch.equal(noisy.clamp(0, 1), gaussian_noise(x, sigma, seed=0))
        for col in ("FC10(1e-4)", "AE400-10"):
            m = results["models"][col]
            model = load_model(m["spec"], split=m["split"], train_subset=10_000).model.eval()
            for row, images in ((free, noisy), (clipped, noisy.clamp(0, 1))):
                with torch.no_grad():
                    error = float((model(images).argmax(dim=1) != y).float().mean())
                assert row["errors"][col] == pytest.approx(error, abs=1e-9)
        lines = {r: next(t for t in md.splitlines() if t.startswith(f"| gaussian({sigma:g}) {r} |"))
                 for r in ("unclipped", "clipped")}
        assert "%)" in lines["unclipped"] and "%)" not in lines["clipped"]  # the paper's column: unclipped only
    assert "leave the [0, 1] box" in md


def test_paper_profile_is_the_full_scale() -> None:
    paper, standard = PROFILES["paper"], PROFILES["standard"]
    assert paper.train_subset is None and paper.n_attack == 10_000 and paper.lbfgs == standard.lbfgs == {}
    assert (PROFILES["quick"].n_attack, standard.n_attack, PROFILES["full"].n_attack) == (100, 500, 10_000)


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
            pred = tm.model.eval()(t["x_adv"]).argmax(dim=1)  # success recomputed from the logits
        assert torch.equal((pred == t["target"]) & (pred != t["label"]), t["success"].bool())
        assert torch.equal(pred, t["pred"])
        assert float(t["x_adv"].min()) >= 0.0 and float(t["x_adv"].max()) <= 1.0
        assert meta["success_rate"] > 0.9


def test_altered_or_damaged_attack_stages_are_recomputed(run: tuple[Path, dict, dict[str, float]]) -> None:
    """Issue 20: an edited mean_distortion and an adversarial set replaced by its clean images (x_adv = x) or cut to
    half its size are caught by the hashes the stages recorded, moved to .broken/ and recomputed."""
    out, _, _ = run
    edited, replaced, cut = sorted((out / "stages").glob("attack*"))[:3]
    names = [json.loads((f / "result.json").read_text())["_stage"]["name"] for f in (edited, replaced, cut)]
    truth = json.loads((edited / "result.json").read_text())["mean_distortion"]
    record = json.loads((edited / "result.json").read_text())
    record["mean_distortion"] = 0.9609
    (edited / "result.json").write_text(json.dumps(record))
    t = load_adversarial(replaced / "adversarial.safetensors")
    save_file({**{k: v.contiguous() for k, v in t.items()}, "x_adv": t["x"].clone()},
              str(replaced / "adversarial.safetensors"))
    blob = (cut / "adversarial.safetensors").read_bytes()
    (cut / "adversarial.safetensors").write_bytes(blob[: len(blob) // 2])
    said: list[str] = []
    results = reproduce(out, "quick", n_attack=N_ATTACK, progress=False, announce=said.append)
    redo = [line for line in said if "[redo]" in line]
    assert len(redo) == 3, said
    recomputed = {s["name"] for s in results["stages"] if s["status"] == "computed"}
    assert set(names) <= recomputed
    assert json.loads((edited / "result.json").read_text())["mean_distortion"] == pytest.approx(truth, rel=1e-6)
    for folder in (replaced, cut):
        t = load_adversarial(folder / "adversarial.safetensors")
        assert bool((t["x_adv"] != t["x"]).any())
    assert len(list((out / "stages" / ".broken").iterdir())) == 3


def test_certified_column_and_exact_minimal(run: tuple[Path, dict, dict[str, float]]) -> None:
    """Table 1's certified lower bound sits below the L-BFGS distortion for every model (all are CROWN-boundable);
    the exact minimal L∞ of "How minimal is minimal?" sits below every attack's (each ratio ≥ 1)."""
    _, results, _ = run
    for name, row in results["table1"].items():
        c = row["certified"]
        assert c["supported"] and c["violations"] == 0, name
        assert 0 < c["mean_certified_rms"] <= row["distortion"], name
    nets = results["section_minimal"]["nets"]
    assert list(nets) == ["784-20-20-10"]
    rec = nets["784-20-20-10"]["linf"]
    assert rec["images"] == PROFILES["quick"].minimal.n_images
    assert rec["exact"]["statuses"].get("optimal", 0) >= 1
    for attack, g in rec["attacks"].items():
        assert g["worst_ratio"] is None or g["median_ratio"] >= 1 - 1e-6, attack
    assert rec["certified_median"] <= rec["exact"]["median"] + 1e-6


def test_the_committed_quick_results_still_hold(run: tuple[Path, dict, dict[str, float]]) -> None:
    """results/szegedy2014-quick/ (published with `--n-attack 60`, as this module runs) is what this code computes:
    every number of the committed results.json comes out again up to what another machine explains (any thread
    count: float reductions differ and training amplifies them), each by its kind (tests/agreement.py): rates within
    4 standard errors for their n, distortions within 4 standard errors of a mean, p-values by their verdict at 0.05,
    configuration and verdicts exactly; a trained net's own properties (spectral bounds, unit indices) only through
    their verdicts. A failure says whether the stages' source hashes changed (code) or not."""
    out, _, _ = run
    ours = json.loads((out / "results.json").read_text())
    committed = json.loads((Path(__file__).resolve().parent.parent / "results" / "szegedy2014-quick" /
                            "results.json").read_text())
    diffs = differences(ours, committed, szegedy_rules(len(load_mnist("test"))))
    assert not diffs, report(diffs, ours, committed)
