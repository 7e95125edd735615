"""§3 of Szegedy et al. 2014 as resumable stages: single units vs random directions (Figures 1-2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ... import __version__
from ...analysis.units import default_layers, unit_analysis
from ...data import load_mnist
from ...io import write_json_atomic
from ...models import TrainedModel
from ...report.document import Section
from ...report.unit_figures import plot_unit_grid
from ...stages import StageRunner
from .common import (
    UNIT_MODELS,
    _model_key,
    _rel,
    _spec_name,
    _trained,
)
from .profiles import SectionSizes
from .report import units_report

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
