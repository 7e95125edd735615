"""§4.3 of Szegedy et al. 2014 as resumable stages: upper Lipschitz bounds per layer (Table 5), checked on each
model's own adversarial pairs."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ... import __version__
from ...analysis.bound_check import bound_check
from ...analysis.spectral import layer_bounds
from ...attacks import (
    TargetedMisclassification,
    lbfgs_attack,
    load_adversarial,
    random_targets,
    save_adversarial,
)
from ...data import load_mnist
from ...data.datasets import subset_order
from ...models import TrainedModel
from ...report.document import Section
from ...stages import StageRunner
from .common import (
    SPECTRAL_MODELS,
    PairSource,
    _digest,
    _model_key,
    _spec_name,
    _trained,
)
from .profiles import SectionSizes
from .report import spectral_report

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
        inputs = {"model": _model_key(tm), "pairs": _digest(x, x_adv), "iters": iters, "version": __version__,
                  "holds": "ratio and local Jacobian"}  # what bound_check's "holds" tests

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
