"""The committed reports under results/ agree with their results.json, and publishing copies what they link."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from blindspots.report.document import to_markdown
from blindspots.report.publish import figure_links, publish, read_provenance

RESULTS = Path(__file__).resolve().parent.parent / "results"
PUBLISHED = sorted(p.parent for p in RESULTS.glob("*/provenance.json"))


@pytest.mark.parametrize("folder", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_committed_report_agrees_with_its_results(folder: Path) -> None:
    meta = read_provenance(folder)
    assert meta["command"].startswith(f"blindspots reproduce {meta['experiment']}")
    assert meta["commit"] and meta["wall_time_s"] > 0
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    report = importlib.import_module(f"blindspots.experiments.{meta['experiment']}.report")
    markdown = (folder / "report.md").read_text(encoding="utf-8")
    assert to_markdown(report.build_report(results)) == markdown
    for link in figure_links(markdown):
        assert (folder / link).is_file(), f"{folder.name}/report.md links to a missing figure {link}"


def _strings(obj: object) -> list[str]:
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return [obj] if isinstance(obj, str) else []


@pytest.mark.parametrize("folder", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_committed_results_name_no_folder_of_the_machine_that_made_them(folder: Path) -> None:
    """Checkpoint paths in a committed results.json are relative to the run folder or the model store
    ($BLINDSPOTS_HOME/…), never an absolute temporary path of the machine that ran it."""
    strings = _strings(json.loads((folder / "results.json").read_text(encoding="utf-8")))
    assert not [s for s in strings if s.startswith("/") or s.startswith("~")]


def test_run_results_record_checkpoints_relative_to_the_run_or_the_store(tmp_path: Path) -> None:
    """portable_paths writes a checkpoint under the run folder relative to it and one in the model store under
    $BLINDSPOTS_HOME/; recorded_path reads each back to the same file; the stage results it reads are not changed."""
    from blindspots.experiments.paths import portable_paths, recorded_path
    from blindspots.io import home

    run, store = tmp_path / "run", home() / "models" / "FC10__s0.safetensors"
    stage = run / "stages" / "train_x-1" / "weights.safetensors"
    results = {"models": {"a": {"checkpoint": str(stage), "n": 1}, "b": {"checkpoint": str(store)}},
               "ensemble": {"member_checkpoints": [str(stage), str(store)]}, "figures": {"x": "figures/x.png"}}
    out = portable_paths(results, run)
    assert out["models"]["a"] == {"checkpoint": "stages/train_x-1/weights.safetensors", "n": 1}
    assert out["models"]["b"]["checkpoint"] == "$BLINDSPOTS_HOME/models/FC10__s0.safetensors"
    assert out["ensemble"]["member_checkpoints"] == [out["models"]["a"]["checkpoint"], out["models"]["b"]["checkpoint"]]
    assert out["figures"] == results["figures"] and results["models"]["a"]["checkpoint"] == str(stage)
    assert [recorded_path(p, run) for p in out["ensemble"]["member_checkpoints"]] == [stage, store]
    assert recorded_path(str(stage), run) == stage  # an older results.json's absolute path, as it is


def test_every_committed_report_was_made_by_reproduce() -> None:
    """Each results/*/report.md has the provenance `--publish` writes (a `blindspots reproduce` command), so every
    committed report can be remade by the CLI; none is made by a script beside it."""
    reports = sorted(p.parent.name for p in RESULTS.glob("*/report.md"))
    assert reports and reports == [p.name for p in PUBLISHED]


def test_publish_copies_report_results_figures_and_provenance(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "stages" / "a-1").mkdir(parents=True)
    (run / "stages" / "a-1" / "fig.png").write_bytes(b"\x89PNG")
    (run / "report.md").write_text("# r\n\n![a figure](stages/a-1/fig.png)\n", encoding="utf-8")
    (run / "results.json").write_text("{}\n", encoding="utf-8")
    dest = publish(run, tmp_path / "results" / "x-quick", experiment="szegedy2014", profile="quick",
                   command="blindspots reproduce szegedy2014 --profile quick", wall_time_s=12.34, commit="abc")
    assert (dest / "stages" / "a-1" / "fig.png").read_bytes() == b"\x89PNG"
    assert (dest / "report.md").read_text(encoding="utf-8").endswith("fig.png)\n")
    assert read_provenance(dest) == {"experiment": "szegedy2014", "profile": "quick",
                                     "command": "blindspots reproduce szegedy2014 --profile quick", "commit": "abc",
                                     "wall_time_s": 12.3}
    (run / "report.md").unlink()
    from blindspots.errors import OutputError
    with pytest.raises(OutputError, match="no finished report"):
        publish(run, tmp_path / "results" / "y", experiment="szegedy2014", profile="quick", command="c",
                wall_time_s=1.0)


def test_result_differences_finds_changed_numbers_only() -> None:
    from blindspots.report.publish import result_differences

    committed = {"table": {"error": 0.0423, "n": 100}, "curve": [0.5, 0.4], "wall_time_s": 12.0,
                 "stages": [{"wall_s": 3}], "label": "FC10", "ci": float("nan")}
    same = json.loads(json.dumps(committed)) | {"wall_time_s": 99.0, "new_key": 1}
    assert result_differences(same, committed) == []  # run facts and new results are no differences
    moved = json.loads(json.dumps(committed))
    moved["table"]["error"], moved["curve"][1], moved["label"] = 0.9609, 0.41, "FC100"
    assert result_differences(moved, committed) == ["table.error: 0.9609 vs 0.0423", "curve[1]: 0.41 vs 0.4",
                                                    "label: 'FC100' vs 'FC10'"]
    assert result_differences(moved, committed, abs_tol=0.02, where="r")[:1] == ["r.table.error: 0.9609 vs 0.0423"]
    del moved["curve"]
    assert "curve: missing" in result_differences(moved, committed)
