"""§3 of Szegedy et al. 2014 as resumable stages: single units vs random directions (Figures 1-2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ... import __version__
from ...analysis.units import ALPHA, MEASURES, default_layers, unit_analysis
from ...data import load_mnist
from ...io import write_json_atomic
from ...models import TrainedModel
from ...report.document import Figure, Section, Table
from ...report.format import num, plus_minus
from ...report.unit_figures import plot_unit_grid
from ...stages import StageRunner
from .common import (
    UNIT_MODELS,
    SectionSizes,
    _model_key,
    _rel,
    _spec_name,
    _trained,
)

# ---------------------------------------------------------------------------------------------- §3 units

def units_section(runner: StageRunner, sizes: SectionSizes, *, seed: int = 0, device: str = "cpu",
                  progress: bool = False, store: Path | None = None) -> tuple[dict[str, Any], Section]:
    """§3: for the CNN's last hidden layer and FC100-100-10's hidden layers, the top-8 test images of single units
    versus random directions (Figures 1-2), their label purity and pixel coherence, and the tests' verdict."""
    test = load_mnist("test", subset=sizes.unit_images)
    records: dict[str, Any] = {}
    for spec in UNIT_MODELS:
        tm = _trained(spec, sizes, seed, device, progress, store)
        for layer in default_layers(tm.model):
            inputs = {"model": _model_key(tm), "layer": layer, "k": 8, "n_directions": sizes.n_directions,
                      "unit_images": sizes.unit_images, "seed": seed, "version": __version__}

            def compute(folder: Path, tm: TrainedModel = tm, layer: str = layer) -> dict[str, Any]:
                a = unit_analysis(tm.model, layer, test.images, test.labels, k=8, n_directions=sizes.n_directions,
                                  seed=seed, model_name=_spec_name(tm))
                record = a.to_dict()
                record["unit_topk"] = test.indices[a.unit_topk].tolist()  # as MNIST test-set indices
                record["random_topk"] = test.indices[a.random_topk].tolist()
                write_json_atomic(folder / "units.json", record)
                plot_unit_grid(test.images, test.labels, a, folder / "units.png", rows=8,
                               title=f"{_spec_name(tm)}, layer {layer}: top-{a.k} of {a.n_images} test images per "
                                     "direction (row label: direction, label purity, true labels)")
                keep = ("layer", "width", "k", "n_images", "summary", "tests", "told_apart", "verdict", "chance",
                        "ambiguous_units", "ambiguous_random")
                return {"model": _spec_name(tm), "model_test_error": tm.meta.get("test_error"),
                        "checkpoint": str(tm.path),
                        **{key: record[key] for key in keep}}

            result, folder = runner.run(f"units {spec} {layer}", inputs, compute)
            records[f"{spec} {layer}"] = {**result, "figure": str(_rel(runner, folder / "units.png"))}
    results = {"layers": records}
    return results, units_report(results)


def units_report(results: dict[str, Any]) -> Section:
    """The §3 Section from `units_section`'s results (e.g. read back from results.json)."""
    records = results["layers"]
    n_images = next(iter(records.values()))["n_images"]
    figures = [Figure(Path(r["figure"]), f"{name}: left, top-8 test images of single units (Figure 1); right, of "
                                         "random directions (Figure 2); the first 8 of each kind in seeded order")
               for name, r in records.items()]
    rows = []
    for name, r in records.items():
        s, t = r["summary"], r["tests"]
        rows.append([name, str(r["width"]), _pm(s["purity"]["units"]), _pm(s["purity"]["random"]),
                     num(t["purity"]["mannwhitney_p"], ".3g"), _pm(s["coherence"]["units"]), _pm(s["coherence"]["random"]),
                     num(t["coherence"]["mannwhitney_p"], ".3g"), num(r["chance"]["purity"]["mean"], ".3f"),
                     "yes" if r["told_apart"] else "no"])
    apart = [n for n, r in records.items() if r["told_apart"]]
    above = [n for n, r in records.items()
             if all(r["summary"][m][kind]["mean"] > r["chance"][m]["p95"] for m in ("purity", "coherence")
                    for kind in ("units", "random"))]
    differences = []  # which measure told them apart in which layer, and which kind scored higher
    for n in apart:
        r = records[n]
        for m, label in (("purity", "label purity"), ("coherence", "pixel coherence")):
            if r["tests"][m]["mannwhitney_p"] < ALPHA / len(MEASURES):
                kind = "units" if r["summary"][m]["units"]["mean"] > r["summary"][m]["random"]["mean"] else "random"
                differences.append(f"{n}: {label}, {kind} higher")
    verdict = (f"Both kinds of direction pick out images far more alike than chance in {len(above)} of {len(records)} "
               f"layers (mean label purity and pixel coherence of units and of random directions above the 95th "
               f"percentile of random 8-image sets). Single units and random directions can be told apart "
               f"(Mann–Whitney, α = {ALPHA:g} Bonferroni over {len(MEASURES)} measures) in {len(apart)} of "
               f"{len(records)} layers"
               + (f" ({'; '.join(differences)})" if apart else "")
               + ". " + ("So here, as the paper found, the semantics live in the space rather than in single units."
                         if not apart else "So here single units are NOT interchangeable with random directions in "
                                           "every layer, a partial departure from the paper's qualitative claim."))
    table = Table(["model, layer", "width", "purity: units", "purity: random", "p", "coherence: units",
                   "coherence: random", "p", "purity: chance", "told apart"], rows,
                  f"§3 — top-8 images of single units vs random directions, over {n_images} test images "
                  "(mean ± std over directions; p: two-sided Mann–Whitney)", verdict, fmt="str")
    paragraphs = [
        "Szegedy et al. compare the test images that maximise one unit's activation with those that maximise a random "
        "direction in the same layer and find both semantically coherent; the paper shows pictures only. Here the "
        "coherence is measured: label purity (share of the most common true label among the top 8) and pixel "
        "coherence (mean pairwise cosine similarity of the 8 images), with a two-sided Mann–Whitney test between "
        "units and random directions. Per-layer sentences: " + " ".join(r["verdict"] for r in records.values()),
    ]
    return Section("§3 — units of φ(x): single units vs random directions", paragraphs, [table], figures)


def _pm(d: dict[str, float]) -> str:
    """A summary's mean ± std over directions."""
    return plus_minus(d["mean"], d["std"], ".3f")
