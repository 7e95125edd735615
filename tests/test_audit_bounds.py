"""The audit's certified side on a small ReLU MLP really trained on MNIST: robust accuracy bracketed per ε
(certified by CROWN ≤ attacked by the verdict, the true value in between), and per image where the exact program
ran: certified radius ≤ exact minimal L∞ ≤ the best attack, each re-checked here against the model itself."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from blindspots.audit import AuditConfig, Effort, run_audit
from blindspots.audit.common import from_list
from blindspots.data.user import load_eval_data
from blindspots.models.controls import fit_control, relu_mlp
from blindspots.models.external import LoadedModel
from blindspots.verify import certified, exact_minimal

pytestmark = pytest.mark.usefixtures("one_thread")

N, K = 30, 4
EFFORT = Effort(pgd_steps=5, apgd_steps=5, minimal_l2={"steps": 5, "lanes": 1}, lbfgs_images=5, bisect_rounds=4,
                restarts=2, unit_directions=10, square_queries=50, apgd_targets=1, exact_images=K,
                exact_max_unstable=10_000, exact_time_limit=300)  # wall clock: generous on a loaded machine


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, nn.Module]:
    net = fit_control(relu_mlp(10, 10), images=5000)  # ~85% test accuracy
    out = tmp_path_factory.mktemp("audit-bounds")
    cfg = AuditConfig([LoadedModel("relu", net, "784-10-10-10 ReLU, 5,000 training images")], n=N, out=out,
                      eps_linf=(0.01, 0.03, 0.1), eps_l2=(0.1, 0.5, 1.5), effort=EFFORT, progress=False)
    return run_audit(cfg, announce=lambda _: None), out, net


def test_certified_le_attacked_at_every_eps(audited: tuple[dict, Path, nn.Module]) -> None:
    results, out, net = audited
    b = results["per_model"]["relu"]["bounds"]
    assert b["supported"] and b["method"] == "crown" and b["piecewise_linear"]
    data = load_eval_data("mnist", n=N)
    for norm in ("linf", "l2"):
        r = b[norm]
        assert r["attacked"] == results["per_model"]["relu"]["verdict"][norm]["robust"]
        assert all(c <= a for c, a in zip(r["certified"], r["attacked"]))
        assert r["certified"][0] > 0  # a real certificate at the smallest ε, not a vacuous 0
        for eps, share in zip(r["eps"], r["certified"]):  # recomputed here from the model
            assert float(certified(net, data.images, data.labels, eps, norm=norm).double().mean()) == share
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Certified bounds and exact minimal perturbations" in md and "true robust accuracy in" in md
    assert "PASS: certified ≤ attacked at every ε" in md and (out / "figures/relu-bounds.png").is_file()


def test_radius_le_exact_le_best_attack(audited: tuple[dict, Path, nn.Module]) -> None:
    results, _, net = audited
    x = results["per_model"]["relu"]["bounds"]["exact"]
    assert x["images"] == K and x["violations"] == 0 and x["flags"] == [""] * K
    solved = sum(s not in ("not run", "over budget") for s in x["status"])
    assert x["checked_without_cut"] == min(EFFORT.exact_check_images, solved)
    radius, value, best = (torch.from_numpy(from_list(x[k])) for k in ("radius", "value", "best_attack"))
    proven = torch.tensor([s == "optimal" for s in x["status"]])
    assert int(proven.sum()) >= 2 and x["checked"] == int(proven.sum())
    assert bool((radius[proven] <= value[proven] + 1e-6).all()) and bool((value[proven] <= best[proven] + 1e-6).all())
    assert bool((radius[proven] > 0).all())
    data = load_eval_data("mnist", n=N)  # the audit's images (a seeded subset of N), of which the first K
    # the exact value again, independently of the audit's incumbents (the project's own attacks as upper bounds)
    again = exact_minimal(net, data.images[:K][proven], data.labels[:K][proven], time_limit=300)
    assert torch.allclose(again.value, value[proven].double(), rtol=1e-3, atol=1e-5)
    gap = x["gap"]
    assert gap["per-image best"]["images"] == int(proven.sum()) and gap["per-image best"]["median"] >= 1 - 1e-6
    assert all(g["worst"] is None or g["worst"] >= g["median"] >= 1 - 1e-6 for g in gap.values())


def test_rerun_is_cached_and_report_from_results(audited: tuple[dict, Path, nn.Module]) -> None:
    from blindspots.audit import build_report
    from blindspots.report.document import to_markdown

    results, out, net = audited
    disk = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert to_markdown(build_report(disk)) == (out / "report.md").read_text(encoding="utf-8")
    assert any(s["name"] == "bounds-relu" for s in results["stages"])
    cfg = AuditConfig([LoadedModel("relu", net, "784-10-10-10 ReLU, 5,000 training images")], n=N, out=out,
                      eps_linf=(0.01, 0.03, 0.1), eps_l2=(0.1, 0.5, 1.5), effort=EFFORT, progress=False)
    again = run_audit(cfg, announce=lambda _: None)
    assert {s["status"] for s in again["stages"]} == {"cached"}
    tighter = replace(cfg, effort=replace(EFFORT, exact_images=2))  # a budget change redoes the bounds stage only
    redo = {s["name"]: s["status"] for s in run_audit(tighter, announce=lambda _: None)["stages"]}
    assert redo.pop("bounds-relu") == "computed" and set(redo.values()) == {"cached"}
