"""§3 unit analysis: top-k search against brute force, the coherence measures against loops, the statistics on a
real (briefly trained) MNIST model, the figure and the `blindspots units` / `spectral` commands."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from blindspots.analysis import (ambiguous_top_k, default_layers, label_purity, layer_activations, pixel_coherence, top_k_images,
                                 unit_analysis)
from blindspots.cli import main as cli_main
from blindspots.data import load_mnist
from blindspots.errors import InputError
from blindspots.models import build_model, train
from blindspots.report.unit_figures import plot_unit_grid

pytestmark = pytest.mark.usefixtures("one_thread")


def test_top_k_agrees_with_a_brute_force_sort() -> None:
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(500, 30, generator=gen)
    dirs = torch.randn(12, 30, generator=gen)
    got = top_k_images(acts, dirs, k=8)
    scores = (acts.double() @ dirs.double().T).numpy()
    for j in range(12):
        brute = sorted(range(500), key=lambda i: -scores[i, j])[:8]
        assert got[j].tolist() == brute
    assert not ambiguous_top_k(acts, dirs, k=8).any()
    acts[:, 3] = acts[:, 3].clamp_min(2.5)  # unit 3 now reads 2.5 on most images: its top-5 ties
    assert ambiguous_top_k(acts, torch.eye(30), k=5).nonzero().flatten().tolist() == [3]
    units = top_k_images(acts, torch.eye(30), k=5)
    for i in (0, 7, 29):
        assert units[i].tolist() == np.argsort(-acts[:, i].numpy(), kind="stable")[:5].tolist()


def test_purity_and_coherence_match_loops() -> None:
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(40, 1, 4, 4, generator=gen)
    labels = torch.randint(0, 10, (40,), generator=gen)
    sets = torch.stack([torch.randperm(40, generator=gen)[:6] for _ in range(5)])
    purity = label_purity(labels, sets)
    coherence = pixel_coherence(images, sets)
    for row, p, c in zip(sets.tolist(), purity, coherence):
        counts = np.bincount(labels[row].numpy())
        assert p == pytest.approx(counts.max() / 6)
        flat = images[row].flatten(1).double()
        cos = [float(torch.nn.functional.cosine_similarity(flat[a], flat[b], dim=0))
               for a, b in itertools.combinations(range(6), 2)]
        assert c == pytest.approx(np.mean(cos), rel=1e-9)


def test_default_layers_and_unknown_layer() -> None:
    assert default_layers(build_model("CNN")) == ["relu3"]
    assert default_layers(build_model("FC100-100-10")) == ["act1", "act2"]
    assert default_layers(build_model("MAXOUT")) == ["maxout1", "maxout2"]
    assert default_layers(build_model("FC10(1e-4)")) == []
    with pytest.raises(InputError, match="no layer 'fc9'.*fc1"):
        layer_activations(build_model("FC100-100-10"), "fc9", torch.rand(2, 1, 28, 28))


@pytest.fixture(scope="module")
def small_cnn(model_store: Path):
    return train("CNN", epochs=2, train_subset=3000, progress=False, store=model_store)  # as in test_spectral


def test_unit_analysis_on_a_trained_cnn(small_cnn, tmp_path: Path) -> None:
    test = load_mnist("test", subset=2000)
    a = unit_analysis(small_cnn.model, "relu3", test.images, test.labels, k=8, n_directions=100, seed=0,
                      model_name="CNN")
    n_units, n_random = 100 - len(a.ambiguous_units), 100 - len(a.ambiguous_random)
    assert a.width == 100 and a.unit_topk.shape == (n_units, 8) and a.random_topk.shape == (n_random, 8)
    assert n_random == 100 and a.random_directions.shape == (100, 100)
    assert np.allclose(np.linalg.norm(a.random_directions, axis=1), 1)
    acts = layer_activations(small_cnn.model, "relu3", test.images)
    assert (a.unit_topk == top_k_images(acts, torch.eye(100)[a.unit_ids], 8).numpy()).all()
    for measure in ("purity", "coherence"):
        t = a.tests[measure]
        assert 0 <= t["mannwhitney_p"] <= 1 and 0 <= t["welch_p"] <= 1 and 0 <= t["auc"] <= 1
        assert a.summary[measure]["units"]["n"] == n_units and a.summary[measure]["random"]["n"] == 100
    # a trained net's directions, of both kinds, pick images that share their label far above chance
    assert a.summary["purity"]["units"]["mean"] > a.chance["purity"]["p95"]
    assert a.summary["purity"]["random"]["mean"] > a.chance["purity"]["p95"]
    assert ("CAN be told apart" in a.verdict) == a.told_apart and "layer relu3" in a.verdict
    record = json.loads(json.dumps(a.to_dict()))
    assert record["verdict"] == a.verdict and len(record["unit_purity"]) == n_units
    again = unit_analysis(small_cnn.model, "relu3", test.images, test.labels, seed=0, model_name="CNN")
    assert again.verdict == a.verdict and (again.random_topk == a.random_topk).all()
    png = plot_unit_grid(test.images, test.labels, a, tmp_path / "units.png", rows=4)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unit_analysis_input_errors() -> None:
    model = build_model("FC100-100-10").eval()
    x = torch.rand(20, 1, 28, 28)
    with pytest.raises(InputError, match="20 images but 19 labels"):
        unit_analysis(model, "act1", x, torch.zeros(19, dtype=torch.long))
    with pytest.raises(InputError, match="k must be between"):
        top_k_images(torch.rand(5, 3), torch.rand(2, 3), k=6)


def test_units_and_spectral_commands(cli_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = ["FC100-100-10", "--epochs", "3", "--train-subset", "5000"]
    out = cli_home / "out"
    assert cli_main(["units", *model, "--images", "1000", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("told apart") == 2 and "layer act1" in printed and "layer act2" in printed
    record = json.loads((out / "units_FC100-100-10_act2.json").read_text())
    assert record["k"] == 8 and len(record["random_topk"]) == 100 and (out / "units_FC100-100-10_act2.png").exists()
    assert max(max(row) for row in record["random_topk"]) < 10_000  # indices into the MNIST test set

    assert cli_main(["spectral", *model, "--pairs", "50", "--attack", "fgsm-min", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [layer["name"] for layer in result["layers"]] == ["flatten", "fc1", "act1", "fc2", "act2", "out"]
    assert result["check"]["holds"] and result["check"]["looseness_vs_local"] >= 1
    # the report's own check (analysis.bound_check): ratio and local Jacobian both under the bound
    assert {"holds_rtol", "adv_over_certified_min", "certified_radius_median"} <= set(result["check"])
    assert max(result["check"]["ratio_max"], result["check"]["local_jacobian_max"]) <= result["product"] * (1 + 1e-5)
    assert cli_main(["spectral", *model, "--pairs", "20"]) == 0  # L-BFGS pairs
    printed = capsys.readouterr().out
    assert "product (Lipschitz bound of the whole net)" in printed and "the bound holds" in printed
    assert cli_main(["spectral", "RBF", "--epochs", "1", "--train-subset", "500", "--pairs", "0"]) == 2
    assert "RBFLayer" in capsys.readouterr().err
