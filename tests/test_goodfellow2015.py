"""`reproduce goodfellow2015 --profile quick` end to end on real MNIST: every experiment is in all three
outputs with the paper's numbers beside ours, every saved FGSM set re-verifies from disk against the
stored models, adversarial training lowers FGSM error, the protocol's early stopping and learning curves are
consistent, the report is a function of results.json alone, and a second run recomputes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from blindspots.attacks import Misclassification, load_adversarial
from blindspots.experiments.goodfellow2015 import (LOGREG, NETS, PROFILES, build_report, predict_confidence, reproduce,
                                                   terminal_summary)
from blindspots.io import file_digest
from blindspots.experiments.paths import recorded_path
from blindspots.models import build_model, load_model
from blindspots.report.document import to_markdown
from blindspots.models.zoo import BinaryLogistic, TwoClassLogits
from blindspots.report.reference import paper_value

pytestmark = pytest.mark.slow
QUICK = PROFILES["quick"]
PUBLISHED_THREADS = 2  # torch threads of the run committed under results/goodfellow2015-quick


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("goodfellow") / "run"
    return out, reproduce(out, "quick", progress=False, announce=lambda s: None)


def test_adversarial_training_lowers_fgsm_error(run: tuple[Path, dict]) -> None:
    _, results = run
    plain = results["fgsm"]["maxout"]["at_0.25"]["error"]
    adv = results["fgsm"]["maxout_adv"]["at_0.25"]["error"]
    assert adv < plain - 0.15, (plain, adv)
    # the noise controls do not buy the same robustness
    for key in ("maxout_sign", "maxout_uniform"):
        assert results["fgsm"][key]["at_0.25"]["error"] > adv, key


def test_mcnemar_per_seed_from_the_saved_predictions(run: tuple[Path, dict]) -> None:
    """Each seed's second-phase stages saved every test image's clean and FGSM label; McNemar per seed counts
    the images only one arm gets wrong, and their difference is the two arms' error difference on 10,000 images."""
    _, results = run
    paired = results["paired_tests"]["maxout_adv"]
    seeds = {str(r["seed"]): r for r in results["seeds"]["maxout_adv"]}
    plain = {str(r["seed"]): r for r in results["seeds"]["maxout"]}
    assert sorted(paired) == sorted(seeds) and len(paired) == results["profile"]["seeds"]
    for seed, tests in paired.items():
        for kind, err in (("clean", "test_error_all"), ("fgsm", "fgsm_error_all")):
            m = tests[kind]
            diff = m["only_treated_wrong"] - m["only_control_wrong"]
            assert diff == round(10_000 * (seeds[seed][err] - plain[seed][err])), (seed, kind)
            assert 0 < m["p"] <= 1
        assert seeds[seed]["test_error_all"] == pytest.approx(seeds[seed]["test_error"], abs=1e-6)
    assert results["findings"]["curve_verdicts"]["maxout_adv"]["mcnemar"] == {s: v["clean"] for s, v in paired.items()}


def test_every_experiment_is_in_all_three_files(run: tuple[Path, dict]) -> None:
    out, results = run
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    disk = json.loads((out / "results.json").read_text())
    assert disk["findings"] == json.loads(json.dumps(results["findings"]))
    for title in ("1 — FGSM", "2 — Logistic regression", "3 — Adversarial training", "4 — Controls",
                  "5 — The RBF network", "6 — Rubbish-class", "7 — Error vs ε", "8 — Ensembles are not a defence",
                  "9 — L1 weight decay is not adversarial training"):
        assert title in md and title in page
    assert "data:image/png;base64," in page  # self-contained
    for experiment in disk["findings"].values():  # the paper column comes from the reference file
        for quantity in experiment.values():
            if isinstance(quantity, dict) and quantity.get("paper") is not None:
                assert quantity["paper"] in _published_values()
    assert "89.4%" in md and "99.9%" in md and "55.4%" in md
    summary = terminal_summary(results)
    assert "maxout FGSM error" in summary and "wall time" in summary
    assert "8 ensemble" in summary and "9 L1 0.0025: training error" in summary
    assert "91.1%" in md and "87.9%" in md  # the ensemble's paper column
    assert "not_reproduced" in disk["facts"]["choices"] and "ensemble" not in disk["facts"]["choices"]["not_reproduced"]


def _published_values() -> set[float]:
    from blindspots.report.reference import published

    vals: set[float] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, (int, float)):
            vals.add(float(node))

    walk(published()["goodfellow2015"])
    return vals


def test_fgsm_sets_reverify_from_disk(run: tuple[Path, dict]) -> None:
    out, results = run
    nets = {n.key: n for n in NETS}
    for key, summary in results["fgsm"].items():
        folder = next((out / "stages").glob(f"fgsm_{key}-*"))
        t = load_adversarial(folder / "fgsm_eps0.25.safetensors")
        if key == LOGREG:
            from safetensors.torch import load_file

            lr = BinaryLogistic()
            lr.load_state_dict(load_file(str(next((out / "stages").glob("train_logreg37-*")) / "logreg37.safetensors")))
            model = TwoClassLogits(lr.eval())
        else:
            n, m = nets[key], results["models"][key]
            if n.is_maxout:
                from safetensors.torch import load_file

                checkpoint = recorded_path(m["checkpoint"], out)  # relative to the run folder in results.json
                assert not Path(m["checkpoint"]).is_absolute() and checkpoint.is_relative_to(out)
                assert file_digest(checkpoint, "sha256") == m["weights_sha256"]
                model = build_model(n.spec)
                model.load_state_dict(load_file(checkpoint))
                model.eval()
            else:
                model = load_model(n.spec, train_subset=QUICK.store_subset).model
            assert m["weights_sha256"] == summary["_stage"]["inputs"]["weights"]
        pred, conf, _ = predict_confidence(model, t["x_adv"][0], independent=key == "rbf")
        crit = Misclassification(t["label"])
        assert torch.equal(pred != t["label"], t["success"][0].bool()), key
        assert torch.equal(crit.is_adversarial(torch.nn.functional.one_hot(pred, 10).float()), t["success"][0].bool())
        at = summary["at_0.25"]
        assert at["error"] == pytest.approx(float((pred != t["label"]).float().mean()), abs=1e-12), key
        r = (t["x_adv"][0] - t["x"]).abs()
        assert float(r.max()) <= 0.25 + 1e-6 and float(t["x_adv"].min()) >= 0 and float(t["x_adv"].max()) <= 1
        assert summary["n_attacked"] == (QUICK.n_attack if key != LOGREG else 2038)


def test_paper_numbers_and_shapes(run: tuple[Path, dict]) -> None:
    _, results = run
    f = results["findings"]
    assert f["1_fgsm"]["maxout_error"]["paper"] == paper_value("goodfellow2015", "fgsm_maxout", "error")
    assert f["2_logreg"]["fgsm_error"]["ours"] > 0.9  # a linear model is fooled almost always
    assert f["2_logreg"]["clean_error"]["ours"] < 0.05
    assert f["1_fgsm"]["softmax_error"]["ours"] > 0.9
    assert f["6_rubbish"]["rbf_fooled"]["ours"] == 0.0
    for curve in f["7_curves"].values():
        assert len(curve["error"]) == len(curve["epsilons"])
    t = results["transfer"]
    for key in t["columns"]:  # the diagonal is each model's own FGSM error, recomputed from disk
        assert t["rows"][key][key] == pytest.approx(results["fgsm"][key]["at_0.25"]["error"], abs=1e-12)


def test_second_run_recomputes_nothing(run: tuple[Path, dict]) -> None:
    out, results = run
    again = reproduce(out, "quick", progress=False, announce=lambda s: None)
    assert all(s["status"] == "cached" for s in again["stages"])
    assert again["findings"] == results["findings"]


def test_protocol_early_stops_then_continues_to_the_objective_target(run: tuple[Path, dict]) -> None:
    """Each protocol net stopped after `patience` epochs without improvement (or at the cap), recorded its training
    objective at the best epoch, then continued from the best model on all rows until the validation objective
    fell to that value (or the cap), with a curve point per epoch; the comparison has every seed."""
    _, results = run
    curves = results["curves"]
    assert [r["seed"] for r in curves["maxout"]] == [0, 1] == [r["seed"] for r in curves["maxout_adv"]]
    for key, runs in curves.items():
        for r in runs:
            es, rt = r["early_stop"], r["retrain"]
            values = es["curve"][es["stop_metric"]]
            best = min(range(len(values)), key=lambda i: (values[i], i)) + 1
            assert es["best_epoch"] == best
            assert len(values) == min(best + QUICK.patience, QUICK.max_epochs), key
            target = es["train_objective_at_best"]
            assert target == es["curve"]["train_objective"][best - 1] and target > 0
            n = len(rt["epoch"])
            assert rt["epoch"] == list(range(1, n + 1)) and 1 <= n <= QUICK.max_epochs
            obj = rt["valid_objective"]
            # stopped at the first epoch at or below the target, or ran to the cap
            assert all(v > target for v in obj[:-1]) and (obj[-1] <= target or n == QUICK.max_epochs), (key, obj)
            metrics = ("test_error", "fgsm_error", "lbfgs_distortion") if key in ("maxout", "maxout_adv") \
                else ("test_error",)
            for metric in metrics:
                assert len(rt[metric]) == n, (key, metric)
            if key in ("maxout", "maxout_adv"):
                assert rt["lbfgs_distortion"][-1] is not None  # the final model's slow metric is filled in
    for key in ("maxout", "maxout_adv"):  # the last curve point is the stored model's test error
        assert curves[key][0]["retrain"]["test_error"][-1] == results["models"][key]["test_error"]
    assert curves["maxout"][0]["retrain"]["fgsm_error"][-1] > curves["maxout_adv"][0]["retrain"]["fgsm_error"][-1]


def test_curve_verdict_from_the_per_seed_finals(run: tuple[Path, dict]) -> None:
    _, results = run
    v = results["findings"]["curve_verdicts"]["maxout_adv"]
    plain = [r["retrain"]["test_error"][-1] for r in results["curves"]["maxout"]]
    adv = [r["retrain"]["test_error"][-1] for r in results["curves"]["maxout_adv"]]
    diffs = [a - b for a, b in zip(adv, plain)]
    assert v["differences"] == pytest.approx(diffs) and v["n"] == 2
    lo, hi = v["ci95"]
    assert lo <= sum(diffs) / 2 <= hi
    assert v["ends_below"] == (sum(diffs) < 0)


def test_report_is_a_function_of_results_json(run: tuple[Path, dict]) -> None:
    out, _ = run
    disk = json.loads((out / "results.json").read_text())
    assert to_markdown(build_report(disk)) == (out / "report.md").read_text()
    for path in disk["figures"].values():
        assert not Path(path).is_absolute() and (out / path).is_file()


def _fixed_net(trained: dict, out: Path) -> torch.nn.Module:
    from safetensors.torch import load_file

    checkpoint = recorded_path(trained["checkpoint"], out)
    assert file_digest(checkpoint, "sha256") == trained["weights_sha256"]
    model = build_model(trained.get("spec", QUICK.ensemble_spec))
    model.load_state_dict(load_file(checkpoint))
    return model.eval()


def test_ensemble_of_maxout_nets_reverifies(run: tuple[Path, dict]) -> None:
    """The ensemble has the profile's members (seeds 0, 1, …), its output is the log of the members' mean softmax,
    and each of its numbers is recomputed here from the saved checkpoints and sets: the ensemble-gradient set in
    full, each member's FGSM images from their stored step signs (rebuilt bit for bit from the member)."""
    from safetensors.torch import load_file

    from blindspots.attacks import fgsm
    from blindspots.data import load_mnist
    from blindspots.models import Ensemble, predict

    out, results = run
    ens = results["ensemble"]
    n = QUICK.ensemble_members
    assert ens["n_members"] == n == len(ens["members"]) == len(ens["one_member_gradient"]) >= 2
    assert [m["seed"] for m in ens["members"]] == list(range(n))
    members = [_fixed_net({"checkpoint": c, "weights_sha256": m["weights_sha256"], "spec": ens["spec"]}, out)
               for c, m in zip(ens["member_checkpoints"], ens["members"])]
    assert len({m["weights_sha256"] for m in ens["members"]}) == n  # different seeds, different nets
    ensemble = Ensemble(members).eval()
    test, attacked = load_mnist("test"), load_mnist("test", subset=QUICK.n_attack)  # the attacked rows: seeded
    x, y = attacked.images, attacked.labels
    with torch.no_grad():
        mean = torch.stack([m(x[:300]).softmax(-1) for m in members]).mean(0)
        torch.testing.assert_close(ensemble(x[:300]), mean.log(), rtol=1e-5, atol=1e-5)
    assert float((predict(ensemble, test.images) != test.labels).float().mean()) == ens["clean_test_error"]
    for m, member in zip(ens["members"], members):
        assert float((predict(member, test.images) != test.labels).float().mean()) == m["test_error"]
    folder = next((out / "stages").glob("ensemble-*"))
    t = load_adversarial(folder / "fgsm_eps0.25.safetensors")
    assert torch.equal(t["x"], x) and float((t["x_adv"][0] - x).abs().max()) <= 0.25 + 1e-6
    wrong = predict(ensemble, t["x_adv"][0]) != y
    assert float(wrong.float().mean()) == ens["ensemble_gradient"]["error"]
    signs = load_file(str(folder / ens["signs_file"]))["sign"]
    assert file_digest(folder / ens["signs_file"], "sha256") == ens["signs_sha256"]
    for i, member in enumerate(members):
        x_adv = torch.add(x, signs[i].float(), alpha=0.25).clamp_(0, 1)
        assert torch.equal(x_adv, fgsm(member, x, Misclassification(y), [0.25]).x_adv[0])
        error = float((predict(ensemble, x_adv) != y).float().mean())
        assert error == ens["one_member_gradient"][i]["error"], i
    f = results["findings"]["8_ensemble"]
    assert f["error"]["paper"] == paper_value("goodfellow2015", "ensemble_12_maxout", "error")
    assert f["error_attack_one_member"]["ours"] == pytest.approx(
        sum(o["error"] for o in ens["one_member_gradient"]) / n)
    assert f["error"]["ours"] > 0.5 and f["error_attack_one_member"]["ours"] > 0.5  # no defence at ε = 0.25


def test_l1_decay_beside_plain_and_adversarial_training(run: tuple[Path, dict]) -> None:
    """One net per L1 coefficient beside plain and FGSM training, same seed and budget: the paper's coefficient
    leaves a higher training error than plain training and a smaller first layer; every number recomputes from
    the checkpoints and the saved FGSM sets; the plain arm is the first ensemble member (one stage)."""
    from blindspots.experiments.goodfellow2015.training import split_rows
    from blindspots.models import predict
    from blindspots.models.train import first_layer_weight

    out, results = run
    l1 = results["l1_decay"]
    arms = {a["key"]: a for a in l1["arms"]}
    assert list(arms) == ["plain", *(f"l1_{c:g}" for c in QUICK.l1_coefficients), "adversarial"]
    assert [a["l1_first"] for a in l1["arms"]] == [0.0, *QUICK.l1_coefficients, 0.0]
    strongest = arms["l1_0.0025"]
    assert strongest["train_error"] > arms["plain"]["train_error"] + 0.02
    assert len(strongest["train_error_curve"]) == QUICK.l1_epochs
    assert arms["plain"]["weights_sha256"] == results["ensemble"]["members"][0]["weights_sha256"]
    train, _, _ = split_rows(QUICK)
    from blindspots.data import load_mnist

    test = load_mnist("test")
    nets = {k: _fixed_net(a | {"spec": l1["spec"]}, out) for k, a in arms.items()}
    with torch.no_grad():
        assert float(first_layer_weight(nets["l1_0.0025"]).abs().sum()) < float(
            first_layer_weight(nets["plain"]).abs().sum())
    for key, arm in arms.items():
        net = nets[key]
        assert float((predict(net, train.images) != train.labels).float().mean()) == arm["train_error"], key
        assert float((predict(net, test.images) != test.labels).float().mean()) == arm["test_error"], key
        folder = next((out / "stages").glob(f"fgsm_{key}_*"))
        t = load_adversarial(folder / "fgsm_eps0.25.safetensors")
        assert float((predict(net, t["x_adv"][0]) != t["label"]).float().mean()) == arm["fgsm_error"], key
        assert arm["fgsm"]["reverified"] and arm["fgsm"]["file_sha256"] == file_digest(
            folder / "fgsm_eps0.25.safetensors", "sha256")
    f = results["findings"]["9_l1_decay"]
    assert f["l1_0.0025"]["train_error"]["paper"] == paper_value("goodfellow2015", "l1_weight_decay", "train_error_floor")
    assert f["plain"]["train_error"]["paper"] is None


def test_the_committed_quick_results_still_hold(run: tuple[Path, dict]) -> None:
    """results/goodfellow2015-quick/ is what this code produces: every headline number of the committed quick run
    (its findings: ours beside the paper's) comes out again, within a stated tolerance — 2 points on rates and 5%
    relative, none for a changed result. The committed run used torch's default 2 threads (a 2-core machine, as CI's);
    another thread count changes the float reductions and, through training, the quick nets themselves (measured:
    rubbish-noise maxout 'fooled' 0.63 at one thread against 0.32 at two), so it is compared at 2 threads only."""
    from blindspots.report.publish import result_differences

    if torch.get_num_threads() != PUBLISHED_THREADS:
        pytest.skip(f"the committed quick run used {PUBLISHED_THREADS} torch threads; this process has "
                    f"{torch.get_num_threads()}")

    out, _ = run
    ours = json.loads((out / "results.json").read_text())
    committed = json.loads((Path(__file__).resolve().parent.parent / "results" / "goodfellow2015-quick" /
                            "results.json").read_text())
    diffs = result_differences(ours["findings"], committed["findings"], abs_tol=0.02, rel_tol=0.05, where="findings")
    assert not diffs, "the committed quick run no longer reproduces (republish it): " + "; ".join(diffs[:10])

