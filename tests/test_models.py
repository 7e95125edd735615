"""Spec parser, real short training runs, determinism, and the checkpoint store's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from blindspots.cli import main as cli_main
from blindspots.data import load_mnist
from blindspots.errors import CheckpointError, SpecError
from blindspots.models import (build_model, error_rate, load_checkpoint, load_model, parse_spec, predict,
                               train)


@pytest.mark.parametrize("text,kind,hidden,lam", [
    ("FC10(1e-4)", "fc", (), 1e-4), ("FC10(0.01)", "fc", (), 1e-2), ("FC10(1)", "fc", (), 1.0),
    ("FC100-100-10", "fc", (100, 100), None), ("fc123-456-10(1e-5)", "fc", (123, 456), 1e-5),
    ("AE400-10", "ae", (400,), None), ("cnn", "cnn", (), None), ("MAXOUT", "maxout", (), None),
    ("RBF", "rbf", (), None),
])
def test_valid_specs_parse_and_round_trip(text: str, kind: str, hidden: tuple[int, ...], lam: float | None) -> None:
    spec = parse_spec(text)
    assert (spec.kind, spec.hidden, spec.weight_decay) == (kind, hidden, lam)
    assert parse_spec(spec.name) == spec
    out = build_model(spec)(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 10)


@pytest.mark.parametrize("text,why", [
    ("FC100-100-9", "10 units"), ("VGG16", "unknown model family"), ("FC10(abc)", "not a number"),
    ("FC10(-1)", ">= 0"), ("", "empty"), ("AE0-10", "positive"),
])
def test_invalid_specs_list_the_valid_forms(text: str, why: str) -> None:
    with pytest.raises(SpecError, match=why) as err:
        parse_spec(text)
    assert "FC10(λ)" in str(err.value) and "AE<h>-10" in str(err.value)


def test_short_training_clears_accuracy_bar(model_store: Path) -> None:
    tm = train("FC100-100-10", train_subset=5000, epochs=20, progress=False, store=model_store)
    test = load_mnist("test")
    err = error_rate(tm.model, test)
    assert err < 0.08, f"FC100-100-10 on 5k images for 20 epochs should beat 8% test error, got {err:.3f}"
    assert abs(err - tm.meta["test_error"]) < 1e-9
    assert tm.meta["train_subset"] == 5000 and tm.meta["recipe"]["optimizer"] == "sgd"


def test_softmax_regression_lands_near_its_optimum(model_store: Path) -> None:
    tm = train("FC10(1e-4)", train_subset=10_000, progress=False, store=model_store)
    assert 0.06 < tm.meta["test_error"] < 0.11


def test_same_seed_same_weights_different_seed_different(tmp_path: Path) -> None:
    kw = dict(train_subset=1000, epochs=1, progress=False)
    a = train("FC100-100-10", seed=3, store=tmp_path / "a", **kw)
    b = train("FC100-100-10", seed=3, store=tmp_path / "b", **kw)
    c = train("FC100-100-10", seed=4, store=tmp_path / "c", **kw)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.model.fc1.weight, c.model.fc1.weight)
    assert a.meta["test_error"] == b.meta["test_error"]


def test_checkpoint_round_trip_and_reuse(model_store: Path) -> None:
    first = train("FC10(1e-2)", train_subset=2000, progress=False, store=model_store)
    again = train("FC10(1e-2)", train_subset=2000, progress=False, store=model_store)
    assert again.meta["wall_time_s"] == first.meta["wall_time_s"]  # reused, not retrained
    loaded = load_model("FC10(1e-2)", train_subset=2000, store=model_store)
    x = load_mnist("test", subset=300).images
    assert torch.equal(predict(loaded.model, x), predict(first.model, x))
    assert not loaded.model.training


def test_truncated_checkpoint_is_refused_and_kept(tmp_path: Path) -> None:
    tm = train("FC10(1)", train_subset=1000, progress=False, store=tmp_path)
    data = tm.path.read_bytes()
    tm.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="sha256|truncated"):
        load_model("FC10(1)", train_subset=1000, store=tmp_path)
    assert tm.path.stat().st_size == len(data) // 2  # nothing deleted or rewritten behind the user's back
    meta_path = tm.path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta.pop("weights_sha256")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="no weights_sha256"):  # unverifiable weights are never loaded
        load_model("FC10(1)", train_subset=1000, store=tmp_path)


def test_checkpoint_of_another_spec_is_refused(tmp_path: Path) -> None:
    tm = train("FC10(1)", train_subset=1000, progress=False, store=tmp_path)
    stem = tm.path.with_suffix("")
    with pytest.raises(CheckpointError, match="holds FC10"):
        load_checkpoint(stem, "FC100-100-10")
    meta = json.loads(stem.with_suffix(".json").read_text())
    meta["spec"] = "FC100-100-10"
    stem.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(stem)


def test_untrained_model_and_bad_split_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="blindspots train"):
        load_model("FC200-200-10", seed=99, store=tmp_path)
    with pytest.raises(SpecError, match="cannot train on split"):
        train("FC10(1)", split="test", store=tmp_path)


def test_cli_reports_errors_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["eval", "FC77"]) == 2
    assert "cannot parse model spec" in capsys.readouterr().err
    assert cli_main(["eval", "FC200-200-10", "--seed", "12345"]) == 2
    assert "has not been trained yet" in capsys.readouterr().err


def test_ae_fit_is_deterministic_and_later_recipe_fields_keep_old_hashes() -> None:
    from dataclasses import replace

    from blindspots.models.train import default_recipe, fit, recipe_dict

    data = load_mnist("train", subset=500)
    recipe = replace(default_recipe("AE400-10"), pretrain_epochs=1, epochs=20)
    a, _ = fit("AE400-10", data, seed=1, recipe=recipe, progress=False)
    b, _ = fit("AE400-10", data, seed=1, recipe=recipe, progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert recipe_dict(recipe)["pretrain_decay"] > 0
    # fields added later are left out of the checkpoint-name hash at their defaults (old names stay valid)
    assert "pretrain_decay" not in recipe_dict(default_recipe("FC100-100-10"))


def test_the_two_weight_decay_forms_and_an_unknown_one() -> None:
    """'half' is (λ/2)·Σ‖W‖² over the weight matrices, 'layer_mean' λ·Σ_layers mean(W²) (biases never decayed);
    another form is refused by name; at its default the recipe's dict (so checkpoint names) is unchanged."""
    from dataclasses import replace

    from blindspots.models.train import decay_penalty, default_recipe, recipe_dict

    torch.manual_seed(0)
    net = build_model("FC100-100-10")
    weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
    assert len(weights) == 3
    half = 0.5 * 1e-3 * sum(float(w.square().sum()) for w in weights)
    mean = 1e-3 * sum(float(w.square().mean()) for w in weights)
    assert float(decay_penalty(net, 1e-3)) == pytest.approx(half, rel=1e-5)
    assert float(decay_penalty(net, 1e-3, "layer_mean")) == pytest.approx(mean, rel=1e-5)
    with pytest.raises(ValueError, match="layer_mean"):
        decay_penalty(net, 1e-3, "l2")
    r = default_recipe("FC100-100-10")
    assert "decay_form" not in recipe_dict(r)
    assert recipe_dict(replace(r, decay_form="layer_mean"))["decay_form"] == "layer_mean"
