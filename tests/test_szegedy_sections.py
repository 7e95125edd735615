"""The §3 and §4.3 report sections end to end on real MNIST at a tiny size: tables with computed verdicts, figures
inside the report folder, the product bound against the saved pairs, pairs handed in by path or as tensors, and a
resume that recomputes nothing (§4.2: test_szegedy_adv_training.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from blindspots.errors import SpecError
import torch

from blindspots.analysis import empirical_ratio, lipschitz_bound
from blindspots.attacks import load_adversarial
from blindspots.stages import StageRunner
from blindspots.experiments.szegedy2014.profiles import PROFILES
from blindspots.experiments.szegedy2014.report import spectral_report, units_report
from blindspots.experiments.szegedy2014.spectral import spectral_section
from blindspots.experiments.szegedy2014.units import units_section
from blindspots.models import train
from blindspots.report.document import Report, to_markdown

# smaller than the "quick" preset, to keep the suite short; the FC nets get past their initial plateau
TINY = replace(PROFILES["quick"].sections, name="tiny", train_subset=1000, epochs=12, cnn_train_subset=1000,
               cnn_epochs=1, unit_images=1000, n_directions=10, n_pairs=12, lbfgs={"search_steps": 2, "max_iter": 30})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, model_store: Path) -> Iterator[dict]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small dense algebra: one thread is far faster on a shared machine
    out = tmp_path_factory.mktemp("sections")
    runner = StageRunner(out, announce=lambda s: None)
    units = units_section(runner, TINY, store=model_store)
    spectral = spectral_section(runner, TINY, store=model_store)
    yield {"out": out, "runner": runner, "units": units, "spectral": spectral, "store": model_store}
    torch.set_num_threads(before)


def test_units_section(run: dict) -> None:
    results, section = run["units"]
    records = results["layers"]
    assert list(records) == ["CNN relu3", "FC100-100-10 act1", "FC100-100-10 act2"]
    (table,) = section.tables
    assert len(table.rows) == 3 and "of 3 layers" in table.verdict
    n_apart = sum(r["told_apart"] for r in records.values())
    assert f"can be told apart (Mann–Whitney, α = 0.05 Bonferroni over 2 measures) in {n_apart} of 3" in table.verdict
    for r in records.values():
        assert r["told_apart"] == any(r["tests"][m]["mannwhitney_p"] < 0.025 for m in ("purity", "coherence"))
        assert r["n_images"] == 1000 and r["k"] == 8
    assert len(section.figures) == 3
    for fig in section.figures:
        assert not fig.path.is_absolute() and (run["out"] / fig.path).read_bytes()[:4] == b"\x89PNG"
    json.dumps(results)


def test_spectral_section_and_the_bound_on_the_saved_pairs(run: dict) -> None:
    results, section = run["spectral"]
    models = results["models"]
    assert list(models) == ["CNN", "FC100-100-10", "FC200-200-10", "FC10(1e-4)"]
    summary, *per_model, alexnet = section.tables
    assert len(per_model) == 4 and "DIFFERENT model" in alexnet.caption and alexnet.rows[-1][0] == "product"
    assert "holds on every pair of every model" in summary.verdict and "loose" in summary.verdict
    stages = run["out"] / "stages"
    for spec, r in models.items():
        assert r["product"] == pytest.approx(math.prod(b["bound"] for b in r["layers"]))
        tm = train(spec, seed=0, train_subset=TINY.cnn_train_subset if spec == "CNN" else TINY.train_subset,
                   epochs=TINY.cnn_epochs if spec == "CNN" else TINY.epochs, progress=False, store=run["store"])
        assert lipschitz_bound(tm.model, (1, 28, 28)) == pytest.approx(r["product"], rel=1e-6)
        (pairs_file,) = stages.glob(f"bound_pairs_{spec.replace('(', '_').replace(')', '_')}-*/adversarial.safetensors")
        t = load_adversarial(pairs_file)
        with torch.no_grad():  # success recomputed from the logits, not read from the attack's record
            pred = tm.model.eval()(t["x_adv"]).argmax(dim=1)
        ok = (pred == t["target"]) & (pred != t["label"]) & ((t["x_adv"] - t["x"]).flatten(1).norm(dim=1) > 0)
        assert int(ok.sum()) == r["check"]["pairs"] > 0
        ratios = empirical_ratio(tm.model, t["x"][ok], t["x_adv"][ok])
        assert float(ratios.max()) <= r["product"] and float(ratios.max()) == pytest.approx(r["check"]["ratio_max"])
        c = r["check"]
        assert c["holds"] and c["looseness_vs_ratio"] >= 1 and c["looseness_vs_local"] >= 1 - 1e-9
        if c["adv_over_certified_min"] is not None:
            assert c["adv_over_certified_min"] >= 1  # nothing flips inside the certified radius
    linear = models["FC10(1e-4)"]["check"]  # softmax regression: the bound is exact, ‖J‖ = σ_max(W) everywhere
    assert linear["local_jacobian_max"] == pytest.approx(models["FC10(1e-4)"]["product"], rel=1e-5)


def test_pairs_handed_in_by_path_or_tensors_reuse_the_same_stage(run: dict) -> None:
    runner = StageRunner(run["out"], announce=lambda s: None)
    stages = run["out"] / "stages"
    (path,) = stages.glob("bound_pairs_FC100-100-10-*/adversarial.safetensors")
    t = load_adversarial(path)
    for pairs in ({"FC100-100-10": path}, {"FC100-100-10": (t["x"], t["x_adv"], t["success"])}):
        results, _ = spectral_section(runner, TINY, pairs=pairs, store=run["store"])
        assert results["models"]["FC100-100-10"]["pairs_source"] == "handed in"
    assert all(r.status == "cached" for r in runner.log if r.name.startswith("bounds"))
    with pytest.raises(KeyError, match="FC10\\(1\\)"):
        spectral_section(runner, TINY, pairs={"FC10(1)": path}, store=run["store"])


def test_a_second_run_recomputes_nothing(run: dict) -> None:
    runner = StageRunner(run["out"], announce=lambda s: None)
    again = (units_section(runner, TINY, store=run["store"]), spectral_section(runner, TINY, store=run["store"]))
    assert runner.log and all(r.status == "cached" for r in runner.log)
    assert [a[0] for a in again] == [run["units"][0], run["spectral"][0]]


def test_sections_rebuild_from_results_json(run: dict) -> None:
    """The lead's report can be rebuilt from results.json alone (e.g. after a resume)."""
    for key, rebuild in (("units", units_report), ("spectral", spectral_report)):
        results, section = run[key]
        again = rebuild(json.loads(json.dumps(results)))
        assert to_markdown(Report("t", [], [again])) == to_markdown(Report("t", [], [section]))
        rebuild(json.loads(json.dumps(results).replace("NaN", "null")))  # strict JSON (NaN -> null) renders too


def test_section_presets() -> None:
    """Each profile carries its §3/§4.3 sizes, written out whole: trained on Table 1's data (its checkpoints reused),
    "full" at standard's sizes, "paper" with 10× standard's pairs and L-BFGS's full c search."""
    for p in PROFILES.values():
        s = p.sections
        assert s.train_subset == s.cnn_train_subset == p.train_subset and s.epochs == p.epochs, p.name
    assert PROFILES["quick"].sections.n_directions == 20
    full, paper, standard = (PROFILES[k].sections for k in ("full", "paper", "standard"))
    assert replace(full, name="standard") == standard
    assert paper.name == "paper" and paper.train_subset is None and paper.unit_images is None  # all 10,000
    assert paper.n_directions >= standard.n_directions and paper.n_pairs >= 10 * standard.n_pairs
    assert paper.lbfgs == {}  # L-BFGS's full c search


def test_a_profile_carries_every_size_and_takes_overrides() -> None:
    """The profile is one object: §3/§4.3 and §4.2 sizes travel in it (no lookup by name), the CLI's --set reaches
    nested fields, and `--profile paper --set parts=s42 --set s42.seeds=1` runs exactly the §4.2 trainings and
    evaluation of results/szegedy2014-s42-paper-seed0 (the command its provenance.json records)."""
    from dataclasses import replace

    from blindspots.experiments.overrides import pick_profile

    quick = PROFILES["quick"]
    assert quick.sections.train_subset == quick.train_subset == 10_000
    assert quick.s42.train_subset == 5000 and quick.parts[:4] == ("tables", "units", "spectral", "s42")
    smaller = pick_profile(PROFILES, "quick", None, {"train_subset": "2000", "sections.n_pairs": "7"})
    assert smaller.sections.train_subset == smaller.sections.cnn_train_subset == 2000 and smaller.sections.n_pairs == 7
    one = pick_profile(PROFILES, "paper", None, {"parts": "s42", "s42.seeds": "1"})
    assert one.parts == ("s42",) and one.s42 == replace(PROFILES["paper"].s42, seeds=1)
    for bad, match in (({"s42.sedes": "1"}, "no field 'sedes'"), ({"tables.x": "1"}, "no field 'tables'"),
                       ({"parts": "s42,zz"}, "choose among"), ({"s42.seeds": "two"}, "expected an integer")):
        with pytest.raises(SpecError, match=match):
            pick_profile(PROFILES, "quick", None, bad)


def test_minimal_section_brackets_l2_too(tmp_path: Path) -> None:
    """"How minimal is minimal?" with an L2 row (SCIP): on a tiny ReLU net trained in the section, CROWN's L2
    radius ≤ the exact program's proven lower bound ≤ its upper bound ≤ every L2 attack's distance; the report
    renders the L2 table."""
    from blindspots.experiments.szegedy2014.minimal import minimal_section
    from blindspots.experiments.szegedy2014.profiles import MinimalSizes
    from blindspots.experiments.szegedy2014.report import _minimal_section

    sizes = MinimalSizes(("8-8",), n_images=2, time_limit=20.0, l2_images=1, l2_time_limit=30.0, train_subset=3000)
    out = minimal_section(StageRunner(tmp_path / "run", announce=lambda s: None), sizes)
    rec = out["nets"]["784-8-8-10"]["l2"]
    ex = rec["exact"]
    assert rec["images"] == 1 and sum(ex["statuses"].values()) == 1
    lower, upper = ex["lower"][0], ex["upper"][0]
    assert rec["certified_median"] <= lower + 1e-6 <= upper + 2e-6
    for name in ("minimal-l2", "deepfool", "cw", "lbfgs"):
        g = rec["attacks"][name]
        assert g["found"] == 0 or g["median_distance"] >= lower - 1e-6, name
    page = to_markdown(Report("t", [], [_minimal_section(out)]))
    assert "each attack's L2 distortion over the exact minimum" in page
