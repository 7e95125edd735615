"""Results that follow the code, faults that never crash a run: source-keyed caches, damaged stage results,
unverifiable checkpoints, two runs into one folder, one-line errors for bad options, and a cached rerun's
timing. Real MNIST and real (tiny) models throughout."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import blindspots.io
from blindspots import __version__
from blindspots.cli import main as cli_main
from blindspots.data import load_mnist
from blindspots.errors import CheckpointError, OutputError, SpecError
from blindspots.experiments.stages import Experiment, timing_line
from blindspots.stages import STAGE_SOURCE_EXCLUDE, StageRunner
from blindspots.experiments.szegedy2014.experiment import STAGE_SOURCES as SZEGEDY_SOURCES
from blindspots.io import home, source_hash
from blindspots.models import load_model, predict, train
from blindspots.models.checkpoint import models_dir
from blindspots.models.spec import parse_spec
from blindspots.models.store import _stem, training_source_hash
from blindspots.report.document import Report, run_facts_section, to_markdown
from blindspots.training.adversarial import Objective

TINY = {"train_subset": 500, "epochs": 1, "progress": False}
PACKAGE = blindspots.io.SOURCE_ROOT  # the real source (tests point SOURCE_ROOT at edited copies of it)


def _package_copy(tmp: Path, name: str, edit: str | None = None) -> Path:
    """A copy of the package's source; `edit` (a file relative to the package) gets a comment appended."""
    root = tmp / name
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    if edit is not None:
        with open(root / edit, "a", encoding="utf-8") as fh:
            fh.write("\n# a code fix\n")
    return root


def test_code_changes_rename_checkpoints_and_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    obj = Objective("fgsm", 0.25, 0.5)
    spec = parse_spec("FC100-100-10")
    runner = StageRunner(tmp_path / "run", announce=lambda s: None)

    def keys(root: Path) -> tuple[str, str, str]:
        monkeypatch.setattr(blindspots.io, "SOURCE_ROOT", root)
        return (_stem(tmp_path, spec, "train", 0, 1, 500).name, _stem(tmp_path, spec, "train", 0, 1, 500, obj).name,
                runner.folder("attack FC100", {"n": 5}).name)

    base = keys(_package_copy(tmp_path, "base"))
    assert keys(_package_copy(tmp_path, "same")) == base  # same bytes, same keys
    plain, adv, stage = keys(_package_copy(tmp_path, "training", "training/pool.py"))
    assert plain == base[0] and adv != base[1] and stage != base[2]
    plain, adv, stage = keys(_package_copy(tmp_path, "attacks", "attacks/fgsm.py"))
    assert plain == base[0] and adv != base[1] and stage != base[2]
    for edit in ("data/idx.py", "models/train.py", "io.py", "errors.py"):
        plain, adv, stage = keys(_package_copy(tmp_path, edit.replace("/", "_"), edit))
        assert plain != base[0] and adv != base[1] and stage != base[2], edit
    for edit in ("report/document.py", "cli/common.py", "report/published.json"):  # re-rendered every run
        assert keys(_package_copy(tmp_path, edit.replace("/", "_"), edit)) == base, edit
    assert __version__ == "0.2.0"


def test_a_stage_is_keyed_by_the_source_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Szegedy's training and §3 unit stages are keyed by what they run: an attack change leaves them (and their
    folders) alone and re-keys the L-BFGS attack stages (keyed by what they run; tests/test_stage_sources.py covers
    every kind)."""
    runner = StageRunner(tmp_path / "run", announce=lambda s: None, sources=SZEGEDY_SOURCES)

    def keys(root: Path) -> tuple[str, str, str]:
        monkeypatch.setattr(blindspots.io, "SOURCE_ROOT", root)
        return tuple(runner.folder(name, {"n": 5}).name for name in ("train FC100", "units CNN relu3", "attack FC100"))

    base = keys(_package_copy(tmp_path, "base"))
    assert keys(_package_copy(tmp_path, "same")) == base
    for edit, changed in (("attacks/lbfgs.py", (False, False, True)), ("analysis/spectral.py", (False, True, False)),
                          ("experiments/szegedy2014/units.py", (False, True, False)),
                          ("experiments/szegedy2014/tables.py", (True, False, True)),
                          ("models/train.py", (True, True, False)), ("stages.py", (True, True, True)),
                          ("experiments/szegedy2014/report.py", (False, False, False))):
        after = keys(_package_copy(tmp_path, edit.replace("/", "_"), edit))
        assert tuple(a != b for a, b in zip(after, base)) == changed, edit


def test_a_fix_to_the_training_code_retrains_instead_of_reusing(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blindspots.io, "SOURCE_ROOT", _package_copy(tmp_path, "before"))
    old = train("FC100-100-10", store=tmp_path / "store", **TINY)
    assert old.meta["source_sha256"] == training_source_hash()  # data, models, io.py, errors.py less the user loaders
    monkeypatch.setattr(blindspots.io, "SOURCE_ROOT", _package_copy(tmp_path, "after", "models/train.py"))
    with pytest.raises(CheckpointError, match="has not been trained yet"):
        load_model("FC100-100-10", store=tmp_path / "store", train_subset=500, epochs=1)
    new = train("FC100-100-10", store=tmp_path / "store", **TINY)
    assert new.path != old.path and new.meta["source_sha256"] != old.meta["source_sha256"]
    assert old.path.exists()  # the old checkpoint is left alone, never overwritten


def _mean_pixel(folder: Path) -> dict[str, float]:
    return {"mean": float(load_mnist("test", subset=200).images.mean())}


@pytest.mark.parametrize("damage", ["truncated", "empty", "list", "no _stage", "missing"])
def test_damaged_stage_result_is_recomputed_and_announced(tmp_path: Path, damage: str) -> None:
    said: list[str] = []
    first, folder = StageRunner(tmp_path, announce=said.append).run("mean", {"n": 200}, _mean_pixel)
    done = folder / "result.json"
    text = done.read_text()
    if damage == "missing":
        done.unlink()
    else:
        done.write_text({"truncated": text[: len(text) // 2], "empty": "", "list": "[1, 2]",
                         "no _stage": json.dumps({"mean": 0.5})}[damage])
    said.clear()
    runner = StageRunner(tmp_path, announce=said.append)
    again, folder2 = runner.run("mean", {"n": 200}, _mean_pixel)
    assert folder2 == folder and again["mean"] == first["mean"] and runner.log[0].status == "computed"
    redo = [line for line in said if "[redo]" in line]
    assert len(redo) == 1 and "moved it to stages/.broken/" in redo[0]
    assert len(list((tmp_path / "stages" / ".broken").iterdir())) == 1
    third = StageRunner(tmp_path, announce=said.append)
    third.run("mean", {"n": 200}, _mean_pixel)
    assert third.log[0].status == "cached"


def _test_images(folder: Path) -> dict[str, float]:
    """A stage that writes a file and returns a number computed from it."""
    x = load_mnist("test", subset=200).images
    save_file({"x": x}, str(folder / "images.safetensors"))
    return {"mean_distortion": float(x.mean())}


def _redo_lines(said: list[str]) -> list[str]:
    return [line for line in said if "[redo]" in line]


def test_altered_number_in_a_finished_result_is_recomputed(tmp_path: Path) -> None:
    first, folder = StageRunner(tmp_path, announce=lambda s: None).run("attack", {"n": 200}, _test_images)
    done = folder / "result.json"
    record = json.loads(done.read_text())
    assert record["_stage"]["files"] == {"images.safetensors": blindspots.io.file_digest(
        folder / "images.safetensors", "sha256")}
    record["mean_distortion"] = 0.9609  # still valid JSON, same keys: only the hash can tell
    done.write_text(json.dumps(record, indent=2))
    said: list[str] = []
    runner = StageRunner(tmp_path, announce=said.append)
    assert not runner.cached("attack", {"n": 200}) and folder.exists()  # asking moves nothing
    again, folder2 = runner.run("attack", {"n": 200}, _test_images)
    assert folder2 == folder and runner.log[0].status == "computed"
    assert again["mean_distortion"] == first["mean_distortion"] != 0.9609
    redo = _redo_lines(said)
    assert len(redo) == 1 and "result.json altered since the stage finished" in redo[0], said
    assert StageRunner(tmp_path, announce=lambda s: None).cached("attack", {"n": 200})


@pytest.mark.parametrize("damage", ["truncated", "replaced", "missing", "unreadable"])
def test_damaged_file_in_a_finished_stage_is_recomputed(tmp_path: Path, damage: str) -> None:
    first, folder = StageRunner(tmp_path, announce=lambda s: None).run("attack", {"n": 200}, _test_images)
    target = folder / "images.safetensors"
    original = target.read_bytes()
    if damage == "truncated":
        target.write_bytes(original[: len(original) // 2])
    elif damage == "replaced":  # a valid file of the same shape: x doubled
        save_file({"x": (load_file(str(target))["x"] * 2).contiguous()}, str(target))
    elif damage == "missing":
        target.unlink()
    else:
        target.unlink()
        target.mkdir()  # reading it fails with an OSError (IsADirectoryError)
    said: list[str] = []
    runner = StageRunner(tmp_path, announce=said.append)
    again, folder2 = runner.run("attack", {"n": 200}, _test_images)
    assert runner.log[0].status == "computed" and again["mean_distortion"] == first["mean_distortion"]
    assert (folder2 / "images.safetensors").read_bytes() == original
    redo = _redo_lines(said)
    assert len(redo) == 1 and "images.safetensors" in redo[0] and "moved it to stages/.broken/" in redo[0], said
    rerun = StageRunner(tmp_path, announce=lambda s: None)
    rerun.run("attack", {"n": 200}, _test_images)
    assert rerun.log[0].status == "cached"


def test_gc_removes_the_stage_folders_the_latest_run_did_not_use(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    old = StageRunner(tmp_path, announce=lambda s: None)
    _, superseded = old.run("attack", {"n": 100}, _test_images)  # e.g. a stage of an earlier code or profile
    del old
    latest = StageRunner(tmp_path, announce=lambda s: None)
    _, current = latest.run("attack", {"n": 200}, _test_images)
    blindspots.io.write_json_atomic(tmp_path / "results.json", {"stages": [vars(r) for r in latest.log]})
    del latest
    past = (tmp_path / "results.json").stat().st_mtime - 10
    for folder in (superseded, current):
        os.utime(folder, (past, past))
    unfinished = StageRunner(tmp_path, announce=lambda s: None).run("attack", {"n": 300}, _test_images)[1]
    os.utime(unfinished, (past + 20, past + 20))  # a later run, killed before it wrote results.json
    (tmp_path / "stages" / ".broken").mkdir()
    assert cli_main(["gc", str(tmp_path), "--dry-run"]) == 0 and superseded.exists()
    assert cli_main(["gc", str(tmp_path)]) == 0
    assert f"removed 1 superseded stage folder(s)\n  {superseded.name}" in capsys.readouterr().out
    assert not superseded.exists() and current.exists() and unfinished.exists()
    assert (tmp_path / "stages" / ".broken").exists()
    rerun = StageRunner(tmp_path, announce=lambda s: None)
    rerun.run("attack", {"n": 200}, _test_images)
    assert rerun.log[0].status == "cached"
    _one_line_error(["gc", str(tmp_path / "nothing-here")], capsys, "is not a folder")
    _one_line_error(["gc", str(tmp_path / "stages")], capsys, "results.json does not exist")


def test_checkpoint_json_without_weights_hash_is_refused(tmp_path: Path) -> None:
    tm = train("FC10(1)", train_subset=1000, progress=False, store=tmp_path)
    tensors = load_file(str(tm.path))
    save_file({k: v * 3 for k, v in tensors.items()}, str(tm.path))  # tampered, still a valid file
    meta_path = tm.path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta.pop("weights_sha256")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="records no weights_sha256.*retrain with --force"):
        load_model("FC10(1)", train_subset=1000, store=tmp_path)


def _sleeper(code: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_second_run_into_the_same_folder_is_refused_and_live_temps_are_kept(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    holder = _sleeper("import sys, time; from pathlib import Path; from blindspots.stages import "
                      f"StageRunner; r = StageRunner(Path({str(out)!r}), announce=print); print('ready', flush=True); "
                      "time.sleep(120)")
    try:
        with pytest.raises(OutputError, match=f"{out} is in use by another blindspots run \\(pid {holder.pid}\\)"):
            StageRunner(out)
        assert cli_main(["reproduce", "szegedy2014", "--profile", "quick", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("blindspots: error: ") and f"pid {holder.pid}" in err and err.count("\n") == 1
        before = sorted(p.name for p in out.iterdir())
        assert cli_main(["attack", "FC10(1)", "--method", "fgsm", "--n", "5", "--out", str(out)]) == 2
        err = capsys.readouterr().err  # `attack --out` takes the same lock
        assert "is in use by another blindspots run" in err and f"pid {holder.pid}" in err and err.count("\n") == 1
        assert sorted(p.name for p in out.iterdir()) == before
    finally:
        holder.kill()
        holder.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        dead_pid = holder.pid  # killed and reaped above
        for pid in (live.pid, dead_pid):
            (out / "stages" / f".tmp-attack-abc-{pid}").mkdir(parents=True)
        StageRunner(out)  # the lock died with its holder
        assert (out / "stages" / f".tmp-attack-abc-{live.pid}").exists(), "a live run's temp folder was deleted"
        assert not (out / "stages" / f".tmp-attack-abc-{dead_pid}").exists()
    finally:
        live.kill()
        live.wait()


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str], match: str) -> None:
    assert cli_main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("blindspots: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert match in err, err


def test_a_failed_attack_leaves_no_out_folder_it_created(cli_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = cli_home / "new" / "attack"
    argv = ["attack", "FC10(1)", "--train-subset", "1000", "--method", "fgsm", "--n", "20", "--out", str(out)]
    _one_line_error(argv, capsys, "has not been trained yet")  # fails after taking --out
    assert not out.exists()
    kept = cli_home / "mine"
    kept.mkdir()
    _one_line_error(argv[:-1] + [str(kept)], capsys, "has not been trained yet")
    assert [p.name for p in kept.iterdir()] == [".blindspots.lock"]  # a folder the user made is left (with the lock)
    train("FC10(1)", train_subset=1000, progress=False)
    assert cli_main(argv + ["--no-progress"]) == 0
    assert {"adversarial.safetensors", "summary.json", "examples.png"} <= {p.name for p in out.iterdir()}


def test_ctrl_c_while_the_parser_is_built_is_one_line() -> None:
    """A real SIGINT to `python -m blindspots models` while build_parser runs (where the first seconds of a command
    go, after torch is imported): one line on stderr, exit status 130, no traceback. The command's test hook says
    when it is inside build_parser, so the signal's timing does not depend on the machine's load."""
    from blindspots.cli import PAUSE_HOOK

    # SIGINT at its default disposition in the child: a shell without job control starts a background job (a CI
    # script run with `&`, say) with SIGINT ignored, the child inherits that, and Python then keeps ignoring it
    proc = subprocess.Popen([sys.executable, "-m", "blindspots", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, PAUSE_HOOK: "1", "PYTHONPATH": os.pathsep.join(sys.path)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == PAUSE_HOOK  # inside build_parser
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130 and err.startswith("blindspots: interrupted") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_a_full_disk_is_one_line_and_a_non_zero_exit(cli_home: Path) -> None:
    """The command line run with a real file-size limit (the kernel refuses writes past 16 KB, as on a full disk):
    training FC10 fails writing its 31 KB checkpoint, with one line and exit status 1, never a traceback."""

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))

    proc = subprocess.run([sys.executable, "-m", "blindspots", "train", "FC10(1)", "--train-subset", "500"],
                          capture_output=True, text=True, preexec_fn=small_disk, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    err = proc.stderr.strip().splitlines()  # a progress bar, then the error
    assert err[-1].startswith("blindspots: error: no space left") and "Traceback" not in proc.stderr, proc.stderr
    assert not any(line.startswith("blindspots") for line in err[:-1]), proc.stderr
    assert not list((cli_home / "home" / "models").glob("*.safetensors"))  # nothing half-written left as a checkpoint


@pytest.mark.parametrize("device,match", [("tpu", "not a torch device"), ("", "--device is empty"),
                                         ("meta", "holds no data"), ("cuda", "no cuda device is available"),
                                         ("cuda:7", "cuda")])
def test_missing_devices_are_one_line_errors(device: str, match: str, capsys: pytest.CaptureFixture[str]) -> None:
    if device.startswith("cuda") and torch.cuda.is_available() and device != "cuda:7":
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    for argv in (["train", "FC10(1)", "--device", device], ["eval", "FC10(1)", "--device", device],
                 ["reproduce", "szegedy2014", "--device", device, "--out", "unused-out"],
                 ["attack", "FC10(1)", "--method", "fgsm", "--device", device, "--out", "unused-out"]):
        _one_line_error(argv, capsys, match)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_is_accepted_where_a_gpu_exists() -> None:
    from blindspots.cli.common import check_device

    assert check_device("cuda") == "cuda" and check_device("cuda:0") == "cuda:0"


def test_bad_epochs_and_output_folders_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for epochs in ("0", "-3"):
        _one_line_error(["train", "FC10(1)", "--epochs", epochs], capsys, "--epochs must be at least 1")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for out, match in (("", "--out is empty"), (str(a_file), "is an existing file"),
                       (str(a_file / "sub"), "cannot be created"), ("/proc/blindspots-out", "cannot be created")):
        _one_line_error(["reproduce", "szegedy2014", "--out", out], capsys, match)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing written for the refused runs
    with pytest.raises(SpecError, match="epochs must be a whole number >= 1"):
        train("FC10(1)", epochs=0, store=tmp_path)


def test_unexpandable_home_and_data_folders_are_one_line_errors(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BLINDSPOTS_DATA", "~nouser-blindspots/x")
    _one_line_error(["data", "fetch"], capsys, "BLINDSPOTS_DATA='~nouser-blindspots/x': cannot expand")
    monkeypatch.delenv("BLINDSPOTS_DATA")
    monkeypatch.setenv("BLINDSPOTS_HOME", "~nouser-blindspots/x")
    _one_line_error(["eval", "FC10(1)"], capsys, "BLINDSPOTS_HOME='~nouser-blindspots/x': cannot expand")


def test_cached_rerun_reports_the_original_compute_time(tmp_path: Path) -> None:
    def compute(folder: Path) -> dict[str, float]:
        tm = train("FC100-100-10", store=folder, **TINY)
        return {"test_error": tm.meta["test_error"]}

    first = StageRunner(tmp_path, announce=lambda s: None)
    result, _ = first.run("train FC100", {"tiny": True}, compute)
    rerun = StageRunner(tmp_path, announce=lambda s: None)
    rerun.run("train FC100", {"tiny": True}, compute)
    record = rerun.log[0]
    assert record.status == "cached" and record.compute_s == result["_stage"]["wall_s"] > record.wall_s
    assert {"report/document.py", "cli"} <= set(STAGE_SOURCE_EXCLUDE)  # rendering code never re-keys a stage
    assert result["_stage"]["source_sha256"] == source_hash(exclude=STAGE_SOURCE_EXCLUDE)
    results = {"facts": {"choices": {}, "versions": {}}, "wall_time_s": {"total": 0.02},
               "stages": [{"name": r.name, "key": r.key, "status": r.status, "wall_s": r.wall_s,
                           "compute_s": r.compute_s} for r in rerun.log]}
    line = timing_line(results)
    assert "0 computed, 1 reused" in line and f"original compute time {record.compute_s:.0f} s" in line
    md = to_markdown(Report("run", [], [run_facts_section(results)]))
    assert f"| train FC100 | cached | {record.wall_s:.1f} | {record.compute_s:.1f} |" in md


def test_experiment_loads_a_checkpoint_with_its_checks(tmp_path: Path) -> None:
    tm = train("FC10(1)", train_subset=1000, progress=False, store=tmp_path / "store")
    exp = Experiment(tmp_path / "run", profile=None, announce=lambda s: None)
    model = exp.load_checkpoint_checked(tm.path, "FC10(1)", tm.meta["weights_sha256"])
    x = load_mnist("test", subset=300).images
    assert torch.equal(predict(model, x), predict(tm.model, x))
    assert exp.load_checkpoint_checked(tm.path.with_suffix(""), "FC10(1)") is model  # loaded once per run
    with pytest.raises(CheckpointError, match="changed since the stage that trained it ran"):
        Experiment(tmp_path / "run2", profile=None).load_checkpoint_checked(tm.path, "FC10(1)", "0" * 64)
    with pytest.raises(CheckpointError, match="holds FC10"):
        Experiment(tmp_path / "run3", profile=None).load_checkpoint_checked(tm.path, "FC100-100-10")


def test_tests_run_in_a_temporary_home_with_the_real_mnist() -> None:
    real = Path.home() / ".cache" / "blindspots"
    assert home().resolve() != real.resolve() and not models_dir().resolve().is_relative_to(real.resolve())
    assert len(load_mnist("test")) == 10_000


def test_report_modules_leave_the_matplotlib_backend_alone(tmp_path: Path) -> None:
    code = ("import matplotlib, blindspots.report.figures, blindspots.report.plots, blindspots.report.unit_figures; "
            "print(matplotlib.get_backend())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "MPLBACKEND": "svg", "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.strip() == "svg"
    from blindspots.report.figures import examples_grid

    x = load_mnist("test", subset=4).images
    png = examples_grid(x, (x + 0.1).clamp(0, 1), [1, 2, 3, 4], [1, 2, 3, 4], tmp_path / "grid.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
