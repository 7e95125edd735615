"""Three report sections of Szegedy et al. 2014 as resumable stages: §3 (units vs random directions), §4.3 (upper
Lipschitz bounds per layer, Table 5) and §4.2 (training on a pool of adversarial examples).

Each `*_section(runner, sizes, ...)` runs its stages through `runner` (cached by a key of their inputs, so a
killed run resumes), writes its figures and artifacts inside its stage folders, and returns (results, Section):
a JSON-ready dict and a report Section whose figure paths are relative to `runner.root` (the report folder).

Models: the CNN and the FC nets are trained, or reused, through the checkpoint store (`models.train`), so with
the same `train_subset` / `epochs` / seed as `reproduce szegedy2014` they are the very models of its Table 1;
every stage key holds the weights' sha256. The §4.2 pair of nets is trained inside its own stages (both timed
there), never taken from the store.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from .. import __version__
from ..analysis.spectral import empirical_ratio, layer_bounds, local_lipschitz
from ..analysis.units import ALPHA, MEASURES, default_layers, unit_analysis
from ..attacks import (TargetedMisclassification, lbfgs_attack, load_adversarial, random_targets,
                       save_adversarial)
from ..data import load_mnist
from ..data.datasets import subset_order
from ..io import write_json_atomic
from ..models import TrainedModel, error_rate, predict, train
from ..models.adversarial_pool import PoolConfig, train_with_pool
from ..models.checkpoint import load_checkpoint, save_checkpoint
from ..models.train import fit
from ..report.document import Figure, Section, Table
from ..report.reference import paper_value, published
from ..report.unit_figures import plot_unit_grid
from .stages import StageRunner

UNIT_MODELS = ("CNN", "FC100-100-10")
SPECTRAL_MODELS = ("CNN", "FC100-100-10", "FC200-200-10", "FC10(1e-4)")
POOL_SPEC = "FC100-100-10"
ALEXNET_LAYERS = ("Conv.1", "Conv.2", "Conv.3", "Conv.4", "Conv.5", "FC1", "FC2", "FC3")

# adversarial pairs handed to `spectral_section`: an adversarial.safetensors path, its tensors (x, x_adv and
# optionally success / label), or a tuple (x, x_adv[, success])
PairSource = Union[str, "os.PathLike[str]", Mapping[str, Tensor], tuple[Tensor, ...]]


@dataclass(frozen=True)
class SectionSizes:
    """How big the three sections run. `train_subset` / `epochs` are those of the FC models shared with Table 1
    (pass the profile's to reuse its checkpoints); None means all 60,000 images / the recipe's epochs.

    Presets in SIZES: "quick" (CI: small subsets, 20 directions, 30 pairs, one §4.2 seed on 5,000 images; about
    30 s on two cores with one torch thread) and "standard" (full-data CNN and FC nets, 100 directions over all
    10,000 test images, 100 CNN pairs, §4.2 on 20,000 images for 20 epochs with two seeds)."""

    name: str
    train_subset: int | None
    epochs: int | None
    cnn_train_subset: int | None
    cnn_epochs: int | None
    unit_images: int | None  # §3: test images searched for the top-k (None: all 10,000)
    n_directions: int  # §3: units and random directions per layer
    n_pairs: int  # §4.3: test images attacked per model that gets no pairs handed in
    pool_train_subset: int | None  # §4.2: training images of both nets
    pool_epochs: int | None  # §4.2: epochs of both nets (None: the FC recipe's)
    pool: PoolConfig = field(default_factory=PoolConfig)
    n_robust: int = 300  # §4.2: test images attacked on both nets
    pool_seeds: int = 1  # §4.2: pairs of nets trained, with seeds seed, seed + 1, ...
    lbfgs: dict[str, Any] = field(default_factory=dict)  # minimal attack for §4.3 pairs and §4.2 robustness


SIZES: dict[str, SectionSizes] = {
    "quick": SectionSizes("quick", train_subset=5000, epochs=10, cnn_train_subset=3000, cnn_epochs=2,
                          unit_images=2000, n_directions=20, n_pairs=30, pool_train_subset=5000, pool_epochs=10,
                          n_robust=50, lbfgs={"search_steps": 4, "max_iter": 50}),
    "standard": SectionSizes("standard", train_subset=None, epochs=None, cnn_train_subset=None, cnn_epochs=None,
                             unit_images=None, n_directions=100, n_pairs=100, pool_train_subset=20_000,
                             pool_epochs=20, n_robust=300, pool_seeds=2, lbfgs={"search_steps": 6}),
}


def sizes_for(profile: str, *, train_subset: int | None, epochs: int | None) -> SectionSizes:
    """The preset of a `reproduce` profile ("full" runs as "standard") with the FC models and the CNN trained on
    that profile's data, so the store's Table 1 checkpoints are reused."""
    base = SIZES.get(profile, SIZES["standard"])
    return replace(base, name=profile, train_subset=train_subset, epochs=epochs, cnn_train_subset=train_subset)


# ---------------------------------------------------------------------------------------------- helpers

def _trained(spec: str, sizes: SectionSizes, seed: int, device: str, progress: bool,
             store: Path | None) -> TrainedModel:
    cnn = spec == "CNN"
    return train(spec, seed=seed, train_subset=sizes.cnn_train_subset if cnn else sizes.train_subset,
                 epochs=sizes.cnn_epochs if cnn else sizes.epochs, device=device, progress=progress, store=store)


def _rel(runner: StageRunner, path: Path) -> Path:
    return Path(os.path.relpath(path, runner.root))


def _pm(d: dict[str, float]) -> str:
    return f"{d['mean']:.3f} ± {d['std']:.3f}"


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def _finite(v: float | None) -> float:
    """NaN for a value written as null (strict JSON) or NaN: the report says "n/a" for it."""
    return float("nan") if v is None else float(v)


def _num(v: float | None, spec: str) -> str:
    v = _finite(v)
    return "n/a" if math.isnan(v) else format(v, spec)


def _span(values: list[float], spec: str) -> str:
    """"a" or "a–b": the range of per-seed values ("n/a" where none is a number)."""
    known = [v for v in values if not math.isnan(v)]
    if not known:
        return "n/a"
    lo, hi = format(min(known), spec), format(max(known), spec)
    return lo if lo == hi else f"{lo}–{hi}"


def _digest(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _spec_name(tm: TrainedModel) -> str:
    return str(tm.meta["spec"])


def _model_key(tm: TrainedModel) -> dict[str, Any]:
    """What identifies a trained model in a stage key: its weights (not where the store keeps them)."""
    m = tm.meta
    return {"spec": m["spec"], "weights_sha256": m["weights_sha256"], "train_subset": m.get("train_subset"),
            "epochs": m.get("epochs")}


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
                     f"{t['purity']['mannwhitney_p']:.3g}", _pm(s["coherence"]["units"]), _pm(s["coherence"]["random"]),
                     f"{t['coherence']['mannwhitney_p']:.3g}", f"{r['chance']['purity']['mean']:.3f}",
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


# ---------------------------------------------------------------------------------------------- §4.3 bounds

def _pair_tensors(source: PairSource) -> dict[str, Tensor]:
    if isinstance(source, (str, os.PathLike)):
        return dict(load_adversarial(source))
    if isinstance(source, Mapping):
        return dict(source)
    return dict(zip(("x", "x_adv", "success"), source))


def _usable_pairs(t: dict[str, Tensor]) -> tuple[Tensor, Tensor, int]:
    """(x, x_adv) of the successful pairs that moved, and how many pairs were handed in."""
    x, x_adv = t["x"].float(), t["x_adv"].float()
    ok = t["success"].bool() if "success" in t else torch.ones(x.shape[0], dtype=torch.bool)
    ok &= (x_adv - x).flatten(1).norm(dim=1) > 0
    return x[ok], x_adv[ok], int(x.shape[0])


def _pairs_stage(runner: StageRunner, tm: TrainedModel, sizes: SectionSizes, seed: int, device: str,
                 progress: bool) -> Path:
    """The model's own minimal L-BFGS adversarial examples on the first `n_pairs` test images of a seeded order,
    each towards a seeded random target != its label; saved as adversarial.safetensors."""
    inputs = {"model": _model_key(tm), "n_pairs": sizes.n_pairs, "lbfgs": sizes.lbfgs, "seed": seed,
              "version": __version__}

    def compute(folder: Path) -> dict[str, Any]:
        test = load_mnist("test")
        chosen = torch.from_numpy(subset_order(len(test), seed)[:sizes.n_pairs])
        x, y = test.images[chosen].to(device), test.labels[chosen].to(device)
        result = lbfgs_attack(tm.model, x, TargetedMisclassification(random_targets(y, seed=seed), y),
                              progress=progress, **sizes.lbfgs)
        save_adversarial(folder / "adversarial.safetensors", result)
        return {"n": int(len(chosen)), "success_rate": float(result.success.float().mean()),
                "test_indices": chosen.tolist(), "attack_params": result.params}

    return runner.run(f"bound pairs {_spec_name(tm)}", inputs, compute)[1] / "adversarial.safetensors"


def bound_check(model: nn.Module, x: Tensor, x_adv: Tensor, product: float) -> dict[str, Any]:
    """The product bound L against the pairs: ‖f(x_adv) − f(x)‖ / ‖x_adv − x‖ (must be ≤ L), the local Jacobian
    norms at x, and the radius the bound certifies around each x, margin / (√2·L) (no change of the predicted class
    within it), beside the ‖x_adv − x‖ that did change it."""
    ratio = empirical_ratio(model, x, x_adv)
    local = local_lipschitz(model, x)
    r = (x_adv - x).flatten(1).double().norm(dim=1)
    with torch.no_grad():
        model.eval()
        device = next(model.parameters()).device
        logits = model(x.to(device)).double().cpu()
        pred_adv = model(x_adv.to(device)).argmax(dim=1).cpu()
    top2 = logits.topk(2, dim=1).values
    certified = (top2[:, 0] - top2[:, 1]) / (math.sqrt(2) * product)
    flipped = pred_adv != logits.argmax(dim=1)
    ratio_r = (r[flipped] / certified[flipped]) if bool(flipped.any()) else torch.empty(0, dtype=torch.float64)
    return {"pairs": int(x.shape[0]), "bound": product, "holds": bool(float(ratio.max()) <= product),
            "ratio_max": float(ratio.max()), "ratio_median": float(ratio.median()),
            "local_jacobian_max": float(local.max()), "local_jacobian_median": float(local.median()),
            "looseness_vs_ratio": product / float(ratio.max()), "looseness_vs_local": product / float(local.max()),
            "flipped": int(flipped.sum()), "adv_l2_median": float(r[flipped].median()) if bool(flipped.any()) else None,
            "certified_radius_median": float(certified.median()),
            "adv_over_certified_min": float(ratio_r.min()) if ratio_r.numel() else None,
            "adv_over_certified_median": float(ratio_r.median()) if ratio_r.numel() else None}


def spectral_section(runner: StageRunner, sizes: SectionSizes, *, pairs: Mapping[str, PairSource] | None = None,
                     seed: int = 0, device: str = "cpu", progress: bool = False, store: Path | None = None,
                     iters: int = 100) -> tuple[dict[str, Any], Section]:
    """§4.3: Table 5-style upper Lipschitz bounds per layer of the CNN, FC100-100-10, FC200-200-10 and FC10(1e-4),
    their product, and the check of the product against the model's own adversarial pairs.

    `pairs` maps a spec (e.g. "FC100-100-10") to the adversarial pairs made for that very model (a path to an
    adversarial.safetensors, its tensors, or (x, x_adv[, success])); models without an entry get `n_pairs` pairs
    made here by L-BFGS. Only successful pairs with x_adv != x are used."""
    pairs = dict(pairs or {})
    unknown = set(pairs) - set(SPECTRAL_MODELS)
    if unknown:
        raise KeyError(f"pairs given for {sorted(unknown)}; the section covers {', '.join(SPECTRAL_MODELS)}")
    records: dict[str, Any] = {}
    for spec in SPECTRAL_MODELS:
        tm = _trained(spec, sizes, seed, device, progress, store)
        handed = spec in pairs
        source = pairs[spec] if handed else _pairs_stage(runner, tm, sizes, seed, device, progress)
        x, x_adv, n_given = _usable_pairs(_pair_tensors(source))
        if x.shape[0] == 0:
            raise ValueError(f"no successful adversarial pair with x_adv != x among the {n_given} given for {spec}")
        shape = tuple(x.shape[1:])
        inputs = {"model": _model_key(tm), "pairs": _digest(x, x_adv), "iters": iters, "version": __version__}

        def compute(folder: Path, tm: TrainedModel = tm, x: Tensor = x, x_adv: Tensor = x_adv) -> dict[str, Any]:
            model = tm.model.eval()
            bounds = layer_bounds(model, shape, verify=True, iters=iters)
            product = math.prod(b.bound for b in bounds)
            return {"model": _spec_name(tm), "test_error": tm.meta.get("test_error"), "checkpoint": str(tm.path),
                    "input_shape": list(shape),
                    "layers": [b.to_dict() for b in bounds], "product": product,
                    "check": bound_check(model, x, x_adv, product)}

        result, _ = runner.run(f"bounds {spec}", inputs, compute)
        result["pairs_source"] = "handed in" if handed else "made here (L-BFGS)"
        result["pairs_given"] = n_given
        records[spec] = result
    results = {"models": records}
    return results, spectral_report(results)


def _alexnet_table() -> Table:
    values = [paper_value("szegedy2014", "table5", layer) for layer in ALEXNET_LAYERS]
    known = [v for v in values if v is not None]
    rows: list[list[Any]] = [[layer, "—" if v is None else f"{v:g}"] for layer, v in zip(ALEXNET_LAYERS, values)]
    rows.append(["product", f"{math.prod(known):.4g}"])
    note = published()["szegedy2014"]["table5"].get("_note", "")
    return Table(["layer", "upper bound"], rows,
                 f"Reference only — the paper's Table 5 for ImageNet AlexNet, a DIFFERENT model ({note}); "
                 "ReLU, max-pooling and contrast normalisation layers not listed", fmt="str")


def spectral_report(results: dict[str, Any]) -> Section:
    """The §4.3 Section from `spectral_section`'s results."""
    records = results["models"]
    tables = []
    for spec, r in records.items():
        rows = []
        for b in r["layers"]:
            shapes = f"{'×'.join(map(str, b['input_shape']))} → {'×'.join(map(str, b['output_shape']))}"
            rows.append([b["name"], b["kind"], shapes, f"{b['bound']:.4g}" + ("" if b["exact"] else " *"),
                         "—" if b["lower"] is None else f"{b['lower']:.4g}", b["method"]])
        rows.append(["product", "", "", f"{r['product']:.4g}", "", "upper bound on ‖f(x+r) − f(x)‖ / ‖r‖"])
        exact = all(b["exact"] for b in r["layers"])
        tables.append(Table(["layer", "kind", "in → out", "upper bound", "power iteration", "method"], rows,
                            f"Table 5 for our {spec} (test error {_pct(r['test_error'])})"
                            + ("" if exact else "; * an upper bound, not the layer's exact constant"), fmt="str"))
    rows = []
    for spec, r in records.items():
        c = r["check"]
        rows.append([spec, f"{r['product']:.4g}", f"{c['ratio_max']:.4g}", f"{c['ratio_median']:.4g}",
                     f"{c['local_jacobian_max']:.4g}", f"{c['looseness_vs_ratio']:.3g}×",
                     f"{c['certified_radius_median']:.3g}",
                     "—" if c["adv_l2_median"] is None else f"{c['adv_l2_median']:.3g}",
                     "—" if c["adv_over_certified_min"] is None else f"{c['adv_over_certified_min']:.3g}×",
                     f"{c['pairs']} ({r['pairs_source']})", "yes" if c["holds"] else "NO"])
    checks = [r["check"] for r in records.values()]
    fails = [s for s, r in records.items() if not r["check"]["holds"]]
    loose = [c["looseness_vs_ratio"] for c in checks]
    gaps = [c["adv_over_certified_min"] for c in checks if c["adv_over_certified_min"] is not None]
    verdict = (("The product bound holds on every pair of every model" if not fails else
                f"The product bound FAILS on {', '.join(fails)} (a bug: it must hold)")
               + f" ({sum(c['pairs'] for c in checks)} pairs). It is loose: {min(loose):.3g}–{max(loose):.3g}× the "
               "largest ratio ‖f(x_adv) − f(x)‖/‖r‖ seen on the adversarial pairs")
    if gaps:
        verdict += (f", and the adversarial examples lie {min(gaps):.3g}× or more beyond the radius the bound "
                    "certifies around their clean image, margin/(√2·L)")
    verdict += (". As in the paper, a large product does not by itself prove adversarial examples exist, and these "
                "bounds are too loose to certify robustness at the distortions the attacks need.")
    summary = Table(["model", "∏ bound L", "max ratio", "median ratio", "max ‖J_f(x)‖", "L / max ratio",
                     "median certified radius", "median adv. ‖r‖₂", "min adv. ‖r‖ / certified", "pairs", "holds"],
                    rows, "§4.3 — the product bound checked on adversarial pairs (ℓ2, on the logits)", verdict,
                    fmt="str")
    paragraphs = [
        "Per-layer upper Lipschitz bounds in ℓ2 (Szegedy et al. §4.3): σ_max(W) for fully connected layers, the "
        "DFT bound of each convolution on the zero-padded grid (verified above by power iteration on the real "
        "layer: the true norm lies between the two columns), 1 for ReLU and non-overlapping max pooling, 1/4 for "
        "the sigmoid. The product bounds how much the logits can move per unit of input change; it is checked "
        "against each model's own minimal adversarial pairs and the local Jacobian norm at their clean images.",
    ]
    return Section("§4.3 — upper Lipschitz bounds per layer (Table 5)", paragraphs,
                   [summary, *tables, _alexnet_table()])


# ---------------------------------------------------------------------------------------------- §4.2 pool

def adversarial_training_section(runner: StageRunner, sizes: SectionSizes, *, seed: int = 0, device: str = "cpu",
                                 progress: bool = False) -> tuple[dict[str, Any], Section]:
    """§4.2: FC100-100-10 trained with weight decay alone and with weight decay + a refreshed pool of adversarial
    examples (same recipe, seed, epochs and clean minibatches), for `sizes.pool_seeds` seeds from `seed` on;
    compared on test error (McNemar), training cost, and robustness (minimal L-BFGS distortion on the same test
    images and targets; each net's error on the other's adversarial examples)."""
    data = load_mnist("train", subset=sizes.pool_train_subset)
    test = load_mnist("test")
    runs = {str(s): _pool_pair(runner, sizes, data, test, s, device, progress)
            for s in range(seed, seed + sizes.pool_seeds)}
    first = runs[str(seed)]
    results = {"seeds": runs, "pool_config": sizes.pool.as_dict(), "pool_description": sizes.pool.describe(),
               "train_subset": sizes.pool_train_subset, "epochs": first[PLAIN]["recipe"]["epochs"],
               "recipe": first[PLAIN]["recipe"]}
    return results, pool_report(results)


PLAIN, POOLED = "weight decay", "weight decay + adversarial pool"


def _pool_pair(runner: StageRunner, sizes: SectionSizes, data: Any, test: Any, seed: int, device: str,
               progress: bool) -> dict[str, Any]:
    """Both nets of one seed (a stage each, timed there, checkpoints saved in the stage folder) and their
    evaluation (a third stage)."""
    base = {"spec": POOL_SPEC, "train_subset": sizes.pool_train_subset, "epochs": sizes.pool_epochs, "seed": seed,
            "version": __version__}

    def finish(folder: Path, model: nn.Module, extra: dict[str, Any]) -> dict[str, Any]:
        record = {"train_error": error_rate(model, data), "test_error": error_rate(model, test), **extra}
        save_checkpoint(folder / "model", model, {"spec": POOL_SPEC, **base, **record})
        return record

    def plain(folder: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        model, recipe = fit(POOL_SPEC, data, seed=seed, epochs=sizes.pool_epochs, device=device, progress=progress)
        return finish(folder, model, {"wall_time_s": time.perf_counter() - t0, "recipe": asdict(recipe)})

    def pooled(folder: Path) -> dict[str, Any]:
        run = train_with_pool(POOL_SPEC, data, config=sizes.pool, seed=seed, epochs=sizes.pool_epochs,
                              device=device, progress=progress)
        return finish(folder, run.model, {"wall_time_s": run.wall_time, "attack_seconds": run.attack_seconds,
                                          "recipe": asdict(run.recipe), "pool": run.stats})

    wd, wd_folder = runner.run(f"s4.2 train weight decay only seed {seed}", base, plain)
    adv, adv_folder = runner.run(f"s4.2 train weight decay + adversarial pool seed {seed}",
                                 {**base, "pool": sizes.pool.as_dict()}, pooled)
    wd["checkpoint"], adv["checkpoint"] = str(wd_folder / "model"), str(adv_folder / "model")  # the final folders
    models = {PLAIN: load_checkpoint(wd_folder / "model", POOL_SPEC, device)[0],
              POOLED: load_checkpoint(adv_folder / "model", POOL_SPEC, device)[0]}
    inputs = {"weights": [wd["_stage"]["inputs"], adv["_stage"]["inputs"], _digest(*_weights(models))],
              "n_robust": sizes.n_robust, "lbfgs": sizes.lbfgs, "seed": seed, "version": __version__}
    ev, _ = runner.run(f"s4.2 evaluate seed {seed}", inputs,
                       lambda folder: _evaluate_pair(folder, models, test, sizes, seed))
    return {PLAIN: wd, POOLED: adv, "evaluation": ev}


def _weights(models: Mapping[str, nn.Module]) -> list[Tensor]:
    return [p.detach() for m in models.values() for p in m.state_dict().values()]


def _evaluate_pair(folder: Path, models: Mapping[str, nn.Module], test: Any, sizes: SectionSizes,
                   seed: int) -> dict[str, Any]:
    """McNemar on the test predictions; minimal L-BFGS distortion of both nets on the same images and targets
    (the first n_robust test images of a seeded order that both classify correctly); cross-model errors."""
    (name_a, a), (name_b, b) = models.items()
    pred_a, pred_b = predict(a, test.images), predict(b, test.images)
    wrong_a, wrong_b = pred_a != test.labels, pred_b != test.labels
    only_a, only_b = int((wrong_a & ~wrong_b).sum()), int((wrong_b & ~wrong_a).sum())
    mcnemar = stats.binomtest(only_b, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    order = torch.from_numpy(subset_order(len(test), seed))
    both = (~wrong_a[order] & ~wrong_b[order]).nonzero().flatten()[:sizes.n_robust]
    chosen = order[both]
    x, y = test.images[chosen], test.labels[chosen]
    criterion = TargetedMisclassification(random_targets(y, seed=seed), y)
    attacks = {}
    for tag, (name, model) in zip(("a", "b"), models.items()):
        res = lbfgs_attack(model, x, criterion, **sizes.lbfgs)
        save_adversarial(folder / f"adversarial_{tag}.safetensors", res)
        attacks[name] = res
    ra, rb = attacks[name_a], attacks[name_b]
    ok = ra.success & rb.success
    da, db = ra.distortion[ok].double().numpy(), rb.distortion[ok].double().numpy()
    wilcoxon = stats.wilcoxon(db, da).pvalue if ok.sum() > 1 and np.any(da != db) else float("nan")

    def transfer(res: Any, model: nn.Module) -> float:
        keep = res.success
        return float((predict(model, res.x_adv[keep]) != y[keep]).float().mean()) if bool(keep.any()) else float("nan")

    per_model = {}
    for name, res in attacks.items():
        d = res.distortion[res.success].double().numpy()
        per_model[name] = {"success_rate": float(res.success.float().mean()), "mean_distortion": float(d.mean()),
                           "median_distortion": float(np.median(d)), "attack_wall_s": res.wall_time}
    return {"test_errors_only_wrong": {name_a: only_a, name_b: only_b}, "mcnemar_p": float(mcnemar),
            "n_robust": int(len(chosen)), "test_indices": chosen.tolist(), "per_model": per_model,
            "paired": {"n": int(ok.sum()), "mean_ratio": float(np.mean(db / da)),
                       "share_larger": float(np.mean(db > da)),
                       "wilcoxon_p": float(wilcoxon)},
            "transfer": {f"made for {src}": {dst: transfer(res, model) for dst, model in models.items()}
                         for src, res in attacks.items()}}


def pool_report(results: dict[str, Any]) -> Section:
    """The §4.2 Section from `adversarial_training_section`'s results."""
    runs = results["seeds"]
    paper = {PLAIN: paper_value("szegedy2014", "section4_2", "weight_decay_only_test_error"),
             POOLED: paper_value("szegedy2014", "section4_2", "adversarial_training_test_error_below")}
    rows = []
    for seed, run in runs.items():
        ev, wall = run["evaluation"], run[PLAIN]["wall_time_s"]
        for name in (PLAIN, POOLED):
            r, p = run[name], ev["per_model"][name]
            rows.append([name, seed, _pct(r["train_error"]), _pct(r["test_error"]),
                         "—" if paper[name] is None else ("< " if name == POOLED else "") + _pct(paper[name]),
                         _num(p["mean_distortion"], ".4f"), _num(p["median_distortion"], ".4f"),
                         f"{100 * p['success_rate']:.1f}%", f"{r['wall_time_s']:.1f}",
                         f"{r['wall_time_s'] / wall:.2f}×"])
    diffs = [run[POOLED]["test_error"] - run[PLAIN]["test_error"] for run in runs.values()]
    lower = sum(d < 0 for d in diffs)
    per_seed = "; ".join(
        f"seed {seed}: {_pct(run[PLAIN]['test_error'])} → {_pct(run[POOLED]['test_error'])} (McNemar p = "
        f"{run['evaluation']['mcnemar_p']:.3g} on the {sum(run['evaluation']['test_errors_only_wrong'].values())} "
        f"test images only one of the two nets gets wrong)" for seed, run in runs.items())
    significant = sum(run["evaluation"]["mcnemar_p"] < 0.05 for run in runs.values())
    ratios = [_finite(run["evaluation"]["paired"]["mean_ratio"]) for run in runs.values()]
    shares = [_finite(run["evaluation"]["paired"]["share_larger"]) for run in runs.values()]
    costs = [run[POOLED]["wall_time_s"] / run[PLAIN]["wall_time_s"] for run in runs.values()]
    attack_share = [run[POOLED]["attack_seconds"] / run[POOLED]["wall_time_s"] for run in runs.values()]
    verdict = (f"Test error with the pool is lower in {lower} of {len(runs)} seed(s); mean change "
               f"{100 * float(np.mean(diffs)):+.2f} points (pool − plain; the paper: 1.6% → below 1.2%, at least "
               f"−0.4 points). {per_seed}; the difference is significant at 0.05 for {significant} of {len(runs)} "
               f"seed(s). The adversarially trained net needs {_span(ratios, '.2f')}× the plain net's minimal L-BFGS "
               f"distortion on the same images and targets (larger on {_span([100 * v for v in shares], '.0f')}% of "
               f"them). Training cost {_span(costs, '.1f')}× the plain net's, "
               f"{100 * float(np.mean(attack_share)):.0f}% of it in the attacks.")
    first = next(iter(runs.values()))
    ev = first["evaluation"]
    table = Table(["FC100-100-10 trained with", "seed", "train err.", "test err.", "paper", "av. min. distortion",
                   "median", "attack success", "training (s)", "cost"], rows,
                  f"§4.2 — training on adversarial examples ("
                  f"{'all 60,000' if results['train_subset'] is None else results['train_subset']} training images, "
                  f"{results['epochs']} epochs; distortion: targeted L-BFGS with random targets on "
                  f"{ev['n_robust']} test images both nets of a seed classify correctly)", verdict, fmt="str")
    names = (PLAIN, POOLED)
    transfer = Table(["successful adversarial examples ↓ / fed to →", *names],
                     [[src, *(f"{100 * row[dst]:.1f}%" for dst in names)] for src, row in ev["transfer"].items()],
                     "§4.2 — error of each net on the other's minimal adversarial examples "
                     f"(seed {next(iter(runs))}; "
                     "diagonal: 100% by construction)", fmt="str")
    pool = first[POOLED]["pool"]
    layer_text = "; ".join(f"layer {k}: {v['added']} of {v['attacked']} attacks added (success "
                           f"{_num(_finite(v['success_rate']) * 100, '.0f')}%, mean RMS distortion "
                           f"{_num(v['mean_rms_distortion'], '.3f')})"
                           for k, v in pool["layers"].items())
    only_input = list(pool["layers"]) == ["input"]
    paragraphs = [
        f"Both nets share the recipe ({results['recipe']['note']}; weight decay "
        f"λ = {results['recipe']['weight_decay']:g} in (λ/2)·Σ‖W‖²), the seed, the epochs and the very same "
        "sequence of clean minibatches; the second also "
        f"trains on a pool of adversarial examples: {results['pool_description']}.",
        f"Pool over the first seed's run ({pool['refreshes']} refreshes, {pool['steps']} steps): {layer_text}. "
        + ("Only input-level examples were used here; the library also makes them for hidden sigmoid layers "
           "(PoolConfig(layers=('input', 'act1', 'act2'))), as the paper did." if only_input
           else "Hidden-layer examples train the layers above that layer only, as the paper describes."),
    ]
    return Section("§4.2 — training on adversarial examples", paragraphs, [table, transfer])


__all__ = ["SectionSizes", "SIZES", "sizes_for", "units_section", "spectral_section", "adversarial_training_section",
           "units_report", "spectral_report", "pool_report", "bound_check", "PairSource", "SPECTRAL_MODELS",
           "UNIT_MODELS", "POOL_SPEC"]
