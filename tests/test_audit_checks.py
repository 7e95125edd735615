"""The audit's per-model checks are a list (`audit.checks.CHECKS`): leaving one out is one list edit, the rest of
the audit (verdict, sanity lines, report) still runs, and the verdict's sources are the checks' declared candidates."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from blindspots.audit import AuditConfig, Effort, build_report, run_audit
from blindspots.audit import report as audit_report
from blindspots.audit import sanity as audit_sanity
from blindspots.audit.checks import CHECKS, candidates
from blindspots.audit.runner import AUDIT_STAGE_SOURCES
from blindspots.models.external import LoadedModel

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = Effort(pgd_steps=3, apgd_steps=3, minimal_l2={"steps": 3, "lanes": 1}, lbfgs_images=5, bisect_rounds=2,
               restarts=2, unit_directions=10, square_queries=20, apgd_targets=1, hsj_images=2, hsj_queries=50)


def test_checks_declare_what_they_are() -> None:
    kinds = [c.kind for c in CHECKS]
    assert len(set(kinds)) == len(kinds) and kinds[0] == "clean"
    for c in CHECKS:
        if c.record is not None:  # a check that stores a record is a cached stage with a source key
            assert f"{c.kind}-" in AUDIT_STAGE_SOURCES, c.kind
        assert c.report is None or callable(getattr(audit_report, c.report)), c.report
        assert c.sanity is None or callable(getattr(audit_sanity, c.sanity)), c.sanity


def test_a_check_left_out_is_one_list_edit(tmp_path: Path, linear: nn.Module) -> None:
    cfg = AuditConfig([LoadedModel("lin", linear, "test")], n=20, out=tmp_path / "out", eps_linf=(0.1,),
                      eps_l2=(1.0,), effort=SMALL, progress=False)
    full = run_audit(cfg, announce=lambda _: None)
    without = run_audit(cfg, announce=lambda _: None, checks=[c for c in CHECKS if c.kind != "units"])
    assert "units" in full["per_model"]["lin"] and "units" not in without["per_model"]["lin"]
    assert not without["failed"]
    assert not any(s["name"].startswith("units-") for s in without["stages"])
    assert {s["status"] for s in without["stages"]} == {"cached"}  # every other stage's key is unchanged
    assert {k: v for k, v in full["per_model"]["lin"].items() if k != "units"} == without["per_model"]["lin"]
    assert without["sanity"] == full["sanity"]
    assert "Single units" in build_report(full).sections[6].title
    assert not build_report(without).sections[6].paragraphs  # the units section is empty, not an error
    declared = set(candidates(CHECKS))
    for norm in ("linf", "l2"):
        assert set(full["per_model"]["lin"]["verdict"][norm]["sources"]) <= declared
