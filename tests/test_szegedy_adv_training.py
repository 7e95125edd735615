"""§4.2 end to end at a tiny size on real MNIST: the ablation arms on the same clean minibatches (the curve probe
changes no weight), every reported error recomputed from the saved checkpoints, McNemar counts, learning curves,
the report rebuilt from results.json alone, a resume that recomputes nothing; the curve verdict and the presets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch

from blindspots.data import load_mnist
from blindspots.errors import SpecError
from blindspots.stages import StageRunner
from blindspots.experiments.szegedy2014.adv_training import adversarial_training_section
from blindspots.experiments.szegedy2014.findings import curve_verdict
from blindspots.experiments.szegedy2014.profiles import PROFILES, PoolSizes
from blindspots.experiments.szegedy2014.report import pool_report
from blindspots.models import error_rate, fit
from blindspots.models.checkpoint import load_checkpoint
from blindspots.report.document import Report, to_markdown
from blindspots.training.pool import PoolConfig

TINY = replace(PROFILES["quick"].s42, name="tiny", train_subset=1000, epochs=12, seeds=2,
               arms=("none", "input", "hidden"),
               pool=PoolConfig(refresh_every=24, attack_size=32, capacity=500, search_steps=1, max_iter=20),
               n_robust=20, lbfgs={"search_steps": 2, "max_iter": 30}, curve_every=5, curve_images=20)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small dense algebra: one thread is far faster on a shared machine
    out = tmp_path_factory.mktemp("s42")
    results, section = adversarial_training_section(StageRunner(out, announce=lambda s: None), TINY)
    yield {"out": out, "results": results, "section": section}
    torch.set_num_threads(before)


def test_every_arm_is_recomputed_from_its_checkpoint(run: dict) -> None:
    results = run["results"]
    assert list(results["seeds"]) == ["0", "1"] and results["arms"] == ["none", "input", "hidden"]
    test = load_mnist("test")
    for r in results["seeds"].values():
        for rec in r["arms"].values():
            model, meta = load_checkpoint(rec["checkpoint"], "FC100-100-10")
            assert error_rate(model, test) == pytest.approx(rec["test_error"]) == meta["test_error"]
            assert rec["recipe"] == results["recipe"] and rec["recipe"]["epochs"] == 12
            assert rec["curve"]["epoch"] == [5, 10, 12]  # every 5 epochs and the last
            assert rec["curve"]["test_error"][-1] == pytest.approx(rec["test_error"])
        ev = r["evaluation"]
        for arm, m in ev["mcnemar"].items():  # the counts agree with the two nets' test errors
            diff = (r["arms"][arm]["test_error"] - r["arms"]["none"]["test_error"]) * len(test)
            assert m["only_arm_wrong"] - m["only_plain_wrong"] == round(diff) and 0 <= m["p"] <= 1
        assert ev["mcnemar"]["none"] == {"only_plain_wrong": 0, "only_arm_wrong": 0, "p": 1.0}
        assert ev["n_robust"] == 20 and len(set(ev["test_indices"])) == 20
        for src, row in ev["per_arm"].items():  # a net falls for its own successful examples
            assert row["transfer"][src] == 1.0
    pools = results["seeds"]["0"]["arms"]
    assert pools["none"]["pool"] is None and set(pools["hidden"]["pool"]["layers"]) == {"act1", "act2"}
    assert set(pools["input"]["pool"]["layers"]) == {"input"} and pools["input"]["attack_seconds"] > 0


def test_the_plain_arm_is_plain_training_and_the_pools_change_the_weights(run: dict) -> None:
    """The curve probe runs between epochs without touching the weights or the shuffling: the plain arm's net is
    exactly `fit` with the same seed, and the pool arms (same clean minibatches) differ from it only by the pool."""
    data = load_mnist("train", subset=1000)
    plain, _ = fit("FC100-100-10", data, seed=1, epochs=12, progress=False)
    arms = run["results"]["seeds"]["1"]["arms"]
    stored = {arm: load_checkpoint(rec["checkpoint"], "FC100-100-10")[0].state_dict() for arm, rec in arms.items()}
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in stored["none"].items())
    assert not torch.equal(stored["input"]["fc1.weight"], stored["none"]["fc1.weight"])
    assert not torch.equal(stored["hidden"]["out.weight"], stored["none"]["out.weight"])


def test_the_report_and_its_rebuild_from_results_json(run: dict) -> None:
    section, results = run["section"], run["results"]
    ablation, curves, transfer = section.tables
    assert [row[0] for row in ablation.rows] == ["weight decay alone", "+ pool at the input", "+ pools at act1, act2"]
    assert "95% CI" in ablation.verdict and "McNemar" in ablation.verdict and len(curves.rows) == 2
    assert "from epoch" in curves.verdict or "not below" in curves.verdict
    assert len(transfer.rows) == 3 and (run["out"] / section.figures[0].path).is_file()
    again = pool_report(json.loads(json.dumps(results)))
    assert to_markdown(Report("t", [], [again])) == to_markdown(Report("t", [], [section]))
    strict = json.loads(json.dumps(results).replace("NaN", "null"))
    for r in strict["seeds"].values():  # no successful attack anywhere: n/a, not a crash
        for row in r["evaluation"]["per_arm"].values():
            row.update(mean_distortion=None, mean_ratio_to_plain=None)
    text = to_markdown(Report("t", [], [pool_report(strict)]))
    assert "n/a" in text


def test_a_second_run_recomputes_nothing(run: dict) -> None:
    runner = StageRunner(run["out"], announce=lambda s: None)
    again, _ = adversarial_training_section(runner, TINY)
    assert runner.log and all(r.status == "cached" for r in runner.log)
    assert again == run["results"]


def test_curve_verdict() -> None:
    plain = [{"epoch": [1, 2, 3, 4], "test_error": [0.10, 0.05, 0.04, 0.030]},
             {"epoch": [1, 2, 3, 4], "test_error": [0.10, 0.06, 0.04, 0.032]}]
    pooled = [{"epoch": [1, 2, 3, 4], "test_error": [0.12, 0.07, 0.03, 0.025]},
              {"epoch": [1, 2, 3, 4], "test_error": [0.11, 0.05, 0.035, 0.028]}]
    v = curve_verdict(plain, pooled)
    assert v["below_since_epoch"] == 3 and v["seeds_below"] == 2
    assert v["final_diff"] == pytest.approx(-0.0045) and v["ci_low"] < v["final_diff"] < v["ci_high"]
    one = curve_verdict(plain[:1], pooled[:1])
    assert one["seeds"] == 1 and one["ci_low"] != one["ci_low"]  # NaN: no interval from one seed
    assert curve_verdict(pooled, plain)["below_since_epoch"] is None


def test_presets_and_refusals() -> None:
    assert PROFILES["full"].s42 == PROFILES["standard"].s42 and PROFILES["paper"].s42.train_subset is None
    assert set(PROFILES["standard"].s42.arms) == set(PROFILES["paper"].s42.arms) == {"none", "input", "hidden", "all"}
    for bad in ({"arms": ("input", "all")}, {"arms": ("none",)}, {"arms": ("none", "act9")}, {"seeds": 0}):
        with pytest.raises(SpecError):
            PoolSizes("x", None, None, **bad)
