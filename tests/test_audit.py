"""`blindspots audit` on real MNIST with two small real models: results.json and the report, the report as a pure
function of results.json, the sanity checks (each able to FLAG), resuming from cached stages, clear errors, and the
command line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from blindspots.audit import AuditConfig, Effort, build_report, check_monotone, run_audit, sanity_lines
from blindspots.audit.report import _median, headline
from blindspots.audit.sanity import failed_checks, transfer_lines
from blindspots.cli import main
from blindspots.data.user import load_eval_data
from blindspots.errors import InputError
from blindspots.models import predict_logits
from blindspots.models.controls import GradientMasked, fit_control, relu_mlp
from blindspots.models.external import LoadedModel
from blindspots.report.document import to_markdown

pytestmark = pytest.mark.usefixtures("one_thread")

N = 60
EFFORT = Effort(pgd_steps=10, apgd_steps=10, minimal_l2={"steps": 10, "lanes": 2}, lbfgs_images=30,
                bisect_rounds=4, restarts=3, unit_directions=30, square_queries=300)
CHECKS = ("success monotone in ε", "100% success at an unbounded budget", "restarts do not change the verdict",
          "gradient-free does not beat gradient attacks", "gradient-free L2 does not beat gradient attacks",
          "outputs are logits (not probabilities)",
          "input gradients are not masked", "cross-entropy does not saturate", "outputs are deterministic",
          "white-box ≥ transfer")


def _config(models: list[LoadedModel], out: Path) -> AuditConfig:
    return AuditConfig(models, n=N, out=out, eps_linf=(0.05, 0.1, 0.2), eps_l2=(0.5, 1.0, 2.0), effort=EFFORT,
                       progress=False)


@pytest.fixture(scope="module")
def models(linear: nn.Module, mlp: nn.Module) -> list[LoadedModel]:
    return [LoadedModel("softmax", linear, "FC10(1e-4), 1,000 training images"),
            LoadedModel("mlp", mlp, "FC100-100-10, 2,000 training images, 3 epochs")]


@pytest.fixture(scope="module")
def audited(models: list[LoadedModel], tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("audit")
    return run_audit(_config(models, out), announce=lambda _: None), out


def test_results_and_report(audited: tuple[dict, Path], models: list[LoadedModel]) -> None:
    results, out = audited
    for name in ("report.md", "report.html", "results.json", "figures/softmax-curves.png", "figures/mlp-minimal.png"):
        assert (out / name).is_file(), name
    assert "data:image/png;base64," in (out / "report.html").read_text(encoding="utf-8")
    assert {"config", "data", "models", "per_model", "transfer", "sanity", "stages", "facts", "wall_time_s"} <= set(results)
    data = load_eval_data("mnist", n=N)
    for m in models:
        rec = results["per_model"][m.name]
        assert set(rec) == {"clean", "minimal_l2", "minimal_linf", "curves", "lipschitz", "units", "sanity_runs",
                            "verdict", "bounds"}
        b = rec["bounds"]  # both models are CROWN-boundable: certified ≤ attacked robust accuracy at every ε
        assert b["supported"] and b["method"] == "crown"
        for norm in ("linf", "l2"):
            assert all(c <= a for c, a in zip(b[norm]["certified"], b[norm]["attacked"]))
        accuracy = float((predict_logits(m.module, data.images).argmax(1) == data.labels).double().mean())
        assert rec["clean"]["accuracy"] == pytest.approx(accuracy)
        for norm in ("linf", "l2"):
            curve = rec["curves"][norm]["lines"]
            assert all(a >= b for a, b in zip(curve["APGD"], curve["APGD"][1:]))  # carried over: non-increasing
            whole = [line for label, line in curve.items() if " on " not in label]  # lines over all N images
            assert len(whole) >= 3
            assert all(env <= min(line[k] for line in whole)
                       for k, env in enumerate(curve["APGD and minimal attacks"]))  # below every line
            assert curve["APGD"][0] <= rec["clean"]["accuracy"]
            verdict = rec["verdict"][norm]["robust"]  # every attack: below every line, non-increasing
            assert all(v <= min(line[k] for line in whole) for k, v in enumerate(verdict))
            assert all(a >= b for a, b in zip(verdict, verdict[1:]))
        # the verdict counts Square, restarts and independent PGD too (sanity runs on every image by default)
        runs, k_ref = rec["sanity_runs"], rec["verdict"]["linf"]["eps"].index(results["config"]["eps_ref"])
        assert runs["images"] == N
        assert rec["verdict"]["linf"]["robust"][k_ref] <= min(runs["robust"][k] for k in ("one", "many", "free"))
        assert {"Square", "PGD restarts", "PGD per ε", "APGD"} <= set(rec["verdict"]["linf"]["sources"])
        # Square-L2 ran at every L2 ε on the images the gradient L2 attacks left robust; its examples enter the verdict
        free_l2 = runs["gradient_free_l2"]
        assert free_l2["eps"] == results["config"]["eps_l2"] and free_l2["ran"][0] > 0
        assert {"Square", "APGD"} <= set(rec["verdict"]["l2"]["sources"])
        assert all(v <= w + 1e-12 for v, w in zip(rec["verdict"]["l2"]["robust"], free_l2["robust_with_square"]))
        assert runs["gradient_free_params"] == {"n_queries": EFFORT.square_queries, "masked": False}
        assert any(s.startswith("transfer from") for s in rec["verdict"]["linf"]["sources"])
        # the kept examples: within ε, and misclassified by a fresh forward pass exactly where the verdict says
        from safetensors.torch import load_file

        folder = next(out.glob(f"stages/verdict-{m.name}-*"))
        best = load_file(str(folder / "best_examples.safetensors"))
        for norm, grid in (("linf", results["config"]["eps_linf"]), ("l2", results["config"]["eps_l2"])):
            for k, eps in enumerate(grid):
                xk = best[norm][:, k]
                size = (xk - data.images).flatten(1)
                size = size.abs().amax(1) if norm == "linf" else size.norm(dim=1)
                assert float(size.max()) <= eps * (1 + 1e-5)
                wrong = predict_logits(m.module, xk).argmax(1) != data.labels
                assert 1 - float(wrong.double().mean()) == pytest.approx(rec["verdict"][norm]["robust"][k])
        assert rec["lipschitz"]["supported"] and rec["lipschitz"]["violations"] == 0
        assert rec["lipschitz"]["checked"] > 0
        assert rec["minimal_l2"]["best"]["stats"]["median"] <= rec["minimal_l2"]["attacks"]["deepfool"]["stats"]["median"]
    assert results["per_model"]["mlp"]["units"]["layer"] == "act2"
    assert "no fully connected hidden layer" in results["per_model"]["softmax"]["units"]["skipped"]
    t = results["transfer"]
    assert t["sources"] == ["softmax", "mlp"] and t["matrix"]["softmax"]["softmax"] > t["clean_error"]["softmax"]
    assert "lbfgs" in results["per_model"]["mlp"]["minimal_l2"]["attacks"]  # small model: L-BFGS runs (first 30)
    for norm in ("minimal_l2", "minimal_linf"):  # HopSkipJump: a decision-based check on the first 20 images
        hsj = results["per_model"]["mlp"][norm]["attacks"]["hopskipjump"]
        assert hsj["ran_on"] == 20 and hsj["success_rate"] == 1.0
    assert results["per_model"]["mlp"]["minimal_l2"]["attacks"]["lbfgs"]["images"] <= 30


def test_report_is_a_function_of_results_json(audited: tuple[dict, Path]) -> None:
    _, out = audited
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    md = to_markdown(build_report(results))
    assert md == (out / "report.md").read_text(encoding="utf-8")
    assert md == to_markdown(build_report(copy.deepcopy(results)))
    for section in ("Clean accuracy", "Minimal perturbations", "Robust accuracy against ε", "Transfer",
                    "Lipschitz bounds", "Single units", "Sanity checks", "Run facts"):
        assert f"## {section}" in md
    assert "sha256" in md and "md5" in md  # run facts: weights and data fingerprints


def test_sanity_lines_present_and_able_to_flag(audited: tuple[dict, Path]) -> None:
    results, _ = audited
    lines = [s["line"] for s in results["sanity"]]
    assert lines == [s["line"] for s in sanity_lines(results)]
    for model in ("softmax", "mlp"):
        for check in CHECKS:
            assert any(ln.split(": ")[1:3] == [model, check] and ln.split(":")[0] in ("PASS", "FLAG")
                       for ln in lines), (model, check)
    free = next(s for s in results["sanity"] if s["model"] == "softmax" and s["check"].startswith("gradient-free"))
    assert "Square attack" in free["numbers"]  # which attack ran is said
    assert results["per_model"]["softmax"]["sanity_runs"]["gradient_free"] == "square"
    # a non-monotone curve is flagged and the ε where it rises named; a monotone one passes
    bad = check_monotone("m", {"PGD": ([0.1, 0.2, 0.3], [0.8, 0.9, 0.1])})
    assert bad["status"] == "FLAG" and "ε 0.1 → 0.2" in bad["line"]
    assert check_monotone("m", {"PGD": ([0.1, 0.2, 0.3], [0.8, 0.8, 0.1])})["status"] == "PASS"
    # restarts that break many more images, and a gradient-free attack beating PGD, are flagged
    worse = copy.deepcopy(results)
    runs = worse["per_model"]["mlp"]["sanity_runs"]["robust"]
    runs.update({"one": 0.5, "any attack": 0.5, "many": 0.3, "free": 0.3})
    status = {s["check"]: s["status"] for s in sanity_lines(worse) if s["model"] == "mlp"}
    assert status["restarts do not change the verdict"] == "FLAG"
    assert status["gradient-free does not beat gradient attacks"] == "FLAG"
    l2 = worse["per_model"]["mlp"]["sanity_runs"]["gradient_free_l2"]
    l2["only"] = [0, 5] + l2["only"][2:]  # Square-L2 broke 5 of 60 images the gradient L2 attacks left robust
    free_l2 = next(s for s in sanity_lines(worse) if s["model"] == "mlp" and s["check"].startswith("gradient-free L2"))
    assert free_l2["status"] == "FLAG" and "broke 5 of the" in free_l2["numbers"]
    del worse["per_model"]["mlp"]["sanity_runs"]["gradient_free_l2"]  # an older results.json: said, not flagged
    status = {s["check"]: s["status"] for s in sanity_lines(worse) if s["model"] == "mlp"}
    assert status["gradient-free L2 does not beat gradient attacks"] == "SKIP"
    runs["any attack"] = 0.3  # what restarts find, the audit's attacks combined found already: the verdict stands
    restarts = next(s for s in sanity_lines(worse) if s["model"] == "mlp" and s["check"].startswith("restarts"))
    assert restarts["status"] == "PASS" and "not converged" in restarts["numbers"]
    runs.update({"one": 0.26, "any attack": 0.26, "many": 0.24})  # exactly at the tolerance: float rounding passes
    worse["per_model"]["mlp"]["sanity_runs"]["images"] = 100
    status = {s["check"]: s for s in sanity_lines(worse) if s["model"] == "mlp"}
    assert status["restarts do not change the verdict"]["status"] == "PASS"
    assert "not converged" not in status["restarts do not change the verdict"]["numbers"]
    runs.update({"one": 0.5, "any attack": 0.5, "many": 0.3})  # restarts beat everything else: flagged, said so
    line_ = next(s for s in sanity_lines(worse) if s["model"] == "mlp" and s["check"].startswith("restarts"))
    assert line_["status"] == "FLAG" and "not converged" not in line_["numbers"]
    # a randomised model is flagged and the EOT said; any FLAG makes the headline "not trustworthy"
    worse["per_model"]["mlp"]["clean"]["output"]["deterministic"] = False
    worse["sanity"] = sanity_lines(worse)
    det = next(s for s in worse["sanity"] if s["model"] == "mlp" and s["check"] == "outputs are deterministic")
    assert det["status"] == "FLAG" and "EOT" in det["numbers"]
    assert headline(worse, "mlp").startswith("mlp: not trustworthy: failed checks: ")
    assert "outputs are deterministic" in headline(worse, "mlp") and "at most" in headline(worse, "mlp")
    assert "not trustworthy" not in headline(results, "softmax") or failed_checks(results, "softmax")
    # transfer stronger than white-box is flagged
    t = copy.deepcopy(results["transfer"])
    t["matrix"]["mlp"]["softmax"] = t["matrix"]["softmax"]["softmax"] + 0.1
    assert {s["model"]: s["status"] for s in transfer_lines(t)}["softmax"] == "FLAG"


def test_rerun_reuses_every_stage(audited: tuple[dict, Path], models: list[LoadedModel]) -> None:
    results, out = audited
    lines: list[str] = []
    again = run_audit(_config(models, out), announce=lines.append)
    assert {s["status"] for s in again["stages"]} == {"cached"}
    assert len(again["stages"]) == len(results["stages"]) == 19  # 7 per model + transfer + verdict and bounds per model
    assert again["per_model"] == results["per_model"] and again["transfer"] == results["transfer"]
    assert any("[cached]   curves-mlp" in ln for ln in lines)


def test_model_that_does_not_fit_the_data(tmp_path: Path) -> None:
    wrong = LoadedModel("wide", nn.Sequential(nn.Flatten(), nn.Linear(100, 10)), "test")
    with pytest.raises(InputError, match=r"\(1, 28, 28\).*in_features=100"):
        run_audit(_config([wrong], tmp_path / "out"), announce=lambda _: None)


def test_normalised_model_and_clear_refusals(tmp_path: Path, linear: nn.Module,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from blindspots.attacks import Normalized
    from blindspots.audit.models import load_models

    x = load_eval_data("mnist", n=8).images
    cfg = AuditConfig([LoadedModel("lin", linear, "test")], mean=(0.1307,), std=(0.3081,), out=tmp_path / "a")
    (m,) = load_models(cfg, x)
    assert isinstance(m.module, Normalized) and m.inner is linear  # attacks work on raw images in [0, 1]
    assert torch.allclose(m.module(x), linear((x - 0.1307) / 0.3081))
    with pytest.raises(InputError, match="--mean and --std go together"):
        AuditConfig([LoadedModel("lin", linear, "test")], mean=(0.1,))
    assert main(["audit", "--model", "NO-SUCH-NET", "--n", "5", "--out", str(tmp_path / "b")]) == 2
    assert "NO-SUCH-NET" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["audit", "--weights", "w.safetensors", "--model", "CNN"])  # --weights before any --model


def test_cli_audit(tmp_path: Path, mlp: nn.Module) -> None:
    from safetensors.torch import save_file

    (tmp_path / "nets.py").write_text("from blindspots.models import build_model\n\n\ndef mlp():\n"
                                      "    return build_model('FC100-100-10')\n", encoding="utf-8")
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, str(tmp_path / "mlp.safetensors"))
    out = tmp_path / "out"
    rc = main(["audit", "--model", f"{tmp_path / 'nets.py'}:mlp", "--weights", str(tmp_path / "mlp.safetensors"),
               "--n", "40", "--eps-linf", "0.1,0.2", "--eps-l2", "1,2", "--out", str(out), "--no-progress"])
    assert rc == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "blindspots audit" in html and "Sanity checks" in html
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["data"]["n"] == 40 and results["models"][0]["weights_sha256"]
    assert torch.equal(torch.tensor(results["config"]["eps_linf"]), torch.tensor([0.1, 0.2]))


def test_median_says_none_found() -> None:
    assert _median({"n": 5, "failed": 5, "median": None}) == "none found"
    assert _median({"n": 5, "failed": 3, "median": float("inf")}).startswith("none found on 3 of 5")
    assert _median({"n": 0, "failed": 0, "median": None}).startswith("n/a")


def test_masked_model_is_flagged_and_not_called_robust(tmp_path: Path) -> None:
    net = fit_control(relu_mlp(128), images=10_000, epochs=3, batch=100)  # ~96% test accuracy
    masked = GradientMasked(net).eval()
    data = load_eval_data("mnist", n=N)
    assert float((masked(data.images).argmax(1) == data.labels).double().mean()) > 0.9
    cfg = AuditConfig([LoadedModel("masked", masked, "round to quarters, logits × 1000")], n=N, out=tmp_path,
                      eps_linf=(0.1, 0.15, 0.3), eps_l2=(1.0, 2.0), effort=EFFORT, progress=False)
    results = run_audit(cfg, announce=lambda _: None)
    m = results["per_model"]["masked"]
    assert m["clean"]["gradients"]["masked"] and m["curves"]["adaptive"]["bpda"]
    for norm in ("minimal_l2", "minimal_linf"):  # gradients unusable: HopSkipJump on every image
        assert m[norm]["attacks"]["hopskipjump"]["ran_on"] == N and "masked: on every image" in m[norm]["decision_based"]
    flags = failed_checks(results, "masked")
    assert "input gradients are not masked" in flags and "cross-entropy does not saturate" in flags
    assert m["verdict"]["linf"]["robust"][-1] <= 0.05  # L∞ 0.3: AutoAttack and BPDA find ~0% robust
    assert m["verdict"]["linf"]["robust"][1] <= 0.1  # the reference ε 0.15, where plain PGD said ~96%
    # L2: gradient attacks, even through BPDA, stay under the rounding (~80% robust at ε = 1); Square-L2 (5000 queries,
    # the probe found masking) crosses it, its examples count in the verdict, and the check flags what it alone broke
    free_l2 = m["sanity_runs"]["gradient_free_l2"]
    assert m["sanity_runs"]["gradient_free_params"] == {"n_queries": 5000, "masked": True}
    assert "gradient-free L2 does not beat gradient attacks" in flags
    assert free_l2["robust_with_square"][0] <= free_l2["robust_gradient"][0] - 0.2  # measured 81.7% → 50.0%
    assert "Square" in m["verdict"]["l2"]["sources"]
    # torchattacks 3.5.1 AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square 5000 queries; seed 0), L2, on these
    # same N = 60 images: 46.7% robust at ε = 1, 13.3% at ε = 2 (measured once; the package never imports it). Square
    # is a random search: alone at 5000 queries it left 50–55% of these images robust over seeds 0–5, so the bound
    # allows a few images of seed noise above AutoAttack's draw
    assert m["verdict"]["l2"]["robust"][0] <= 0.467 + 0.07  # measured 50.0%
    assert m["verdict"]["l2"]["robust"][1] <= 0.133 + 0.05  # measured 11.7%
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert ("masked: not trustworthy: failed checks: gradient-free L2 does not beat gradient attacks; input "
            "gradients are not masked") in md
    assert not m["bounds"]["supported"] and "'<model>' (GradientMasked)" in m["bounds"]["reason"]  # named, no crash
    assert "masked: no certified bound: verify cannot bound layer '<model>' (GradientMasked)" in md


def test_edited_model_code_recomputes_its_stages(tmp_path: Path, linear: nn.Module) -> None:
    from safetensors.torch import save_file

    from blindspots.audit.models import load_models

    code = ("from torch import nn\n\n\ndef net():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)"
            "{})\n")
    path = tmp_path / "edited_nets.py"
    path.write_text(code.format(""), encoding="utf-8")
    save_file({k.replace("out.", "1.", 1): v.contiguous() for k, v in linear.state_dict().items()},
              str(tmp_path / "w.safetensors"))
    target = (f"{path}:net", str(tmp_path / "w.safetensors"))
    small = Effort(pgd_steps=3, apgd_steps=3, minimal_l2={"steps": 3, "lanes": 1}, lbfgs_images=5, bisect_rounds=2,
                   restarts=2, unit_directions=10, square_queries=20, apgd_targets=1)
    cfg = AuditConfig([target], n=20, out=tmp_path / "out", eps_linf=(0.1,), eps_l2=(1.0,), effort=small,
                      progress=False)
    first = run_audit(cfg, announce=lambda _: None)
    assert {s["status"] for s in first["stages"]} == {"computed"}
    assert {s["status"] for s in run_audit(cfg, announce=lambda _: None)["stages"]} == {"cached"}
    x = load_eval_data("mnist", n=8).images
    before = load_models(cfg, x)[0]
    path.write_text(code.format(", nn.Tanh()"), encoding="utf-8")  # same weights, another model
    after = load_models(cfg, x)[0]
    assert after.key != before.key
    assert torch.equal(after.inner[1].weight, before.inner[1].weight)
    again = run_audit(cfg, announce=lambda _: None)
    assert {s["status"] for s in again["stages"]} == {"computed"}  # nothing of the old model reused
