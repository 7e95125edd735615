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
