"""`blindspots units SPEC` (§3: single units vs random directions) and `blindspots spectral SPEC` (§4.3: per-layer
Lipschitz bounds, verified on the model's own adversarial pairs)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis.bound_check import bound_check
from ..analysis.spectral import format_bound_table, layer_bounds
from ..analysis.units import default_layers, unit_analysis
from ..data import load_mnist
from ..errors import InputError
from ..io import write_json_atomic
from ..models import TrainedModel, train
from ..report.format import pct
from .common import add_data_dir, add_device, add_model_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("units", help="§3: do single units' top images differ from random directions'?")
    add_model_args(u)
    add_device(u)
    add_data_dir(u)
    u.add_argument("--layer", action="append", default=None, metavar="NAME",
                   help="layer to analyse (repeatable); default: the fully connected hidden layers "
                        "(CNN: relu3; FC100-100-10: act1 and act2)")
    u.add_argument("--k", type=int, default=8, help="top images per direction (default 8)")
    u.add_argument("--directions", type=int, default=100, help="units and random directions of each kind (default 100)")
    u.add_argument("--direction-seed", type=int, default=0,
                   help="seed of the unit choice, random directions and chance sets (default 0); --seed is the model's")
    u.add_argument("--images", type=int, default=None, metavar="N",
                   help="use a fixed seeded subset of N test images (default all)")
    u.add_argument("--rows", type=int, default=8, help="directions of each kind drawn in the figure (default 8)")
    u.add_argument("--out", default="runs/units", help="output folder for the JSON and PNG (default runs/units)")
    u.add_argument("--json", action="store_true", help="print the summaries as JSON")
    u.set_defaults(func=_units)

    s = sub.add_parser("spectral", help="§4.3: upper Lipschitz bound of each layer and of the whole net")
    add_model_args(s)
    add_device(s)
    add_data_dir(s)
    s.add_argument("--pairs", type=int, default=100, metavar="N",
                   help="test images for the empirical check of the bound (0 to skip; default 100)")
    s.add_argument("--attack", default="lbfgs", choices=ATTACKS,
                   help="how the check's adversarial pairs are made (default lbfgs, the paper's minimal attack)")
    s.add_argument("--iters", type=int, default=100, help="power-iteration steps per layer check (default 100)")
    s.add_argument("--json", action="store_true", help="print the table and the check as JSON")
    s.set_defaults(func=_spectral)


def _model(args: argparse.Namespace) -> TrainedModel:
    return train(args.spec, split=args.split, seed=args.seed, epochs=args.epochs, train_subset=args.train_subset,
                 dataset=args.dataset, device=args.device, data_dir=args.data_dir, progress=sys.stderr.isatty())


def _units(args: argparse.Namespace) -> int:
    from ..report.unit_figures import plot_unit_grid

    tm = _model(args)
    name = tm.meta["spec"]
    layers = args.layer or default_layers(tm.model)
    if not layers:
        raise InputError(f"{name} has no fully connected hidden layer to analyse; name one with --layer "
                         "(see `blindspots units --help`).")
    test = load_mnist("test", dataset=args.dataset, subset=args.images, data_dir=args.data_dir)
    if args.images is not None:
        test_desc = f"seeded subset of {len(test)} test images"
    else:
        test_desc = f"all {len(test)} test images"
    out = Path(args.out)
    records = []
    for layer in layers:
        a = unit_analysis(tm.model, layer, test.images, test.labels, k=args.k, n_directions=args.directions,
                          seed=args.direction_seed, model_name=name)
        stem = out / f"units_{tm.spec.slug}_{layer.replace('.', '-')}"
        record = {"spec": name, "checkpoint": str(tm.path), "model_test_error": tm.meta.get("test_error"),
                  "images": test_desc, "data_md5": test.checksums, **a.to_dict()}
        # top-k as indices into the MNIST test set, whatever subset was analysed
        record["unit_topk"] = test.indices[a.unit_topk].tolist()
        record["random_topk"] = test.indices[a.random_topk].tolist()
        write_json_atomic(stem.with_suffix(".json"), record)
        plot_unit_grid(test.images, test.labels, a, stem.with_suffix(".png"), rows=args.rows,
                       title=f"{name}, layer {layer}: top-{a.k} test images per direction "
                             "(row label: direction, label purity, true labels)")
        records.append({key: record[key] for key in ("spec", "layer", "summary", "tests", "told_apart", "verdict",
                                                     "chance", "ambiguous_units", "ambiguous_random")})
        records[-1]["files"] = [str(stem.with_suffix(".json")), str(stem.with_suffix(".png"))]
        if not args.json:
            print(a.verdict)
            print(f"  -> {stem.with_suffix('.json')}, {stem.with_suffix('.png')}")
    if args.json:
        print_json(records)
    return 0


ATTACKS = ("lbfgs", "fgsm-min")


def _adversarial_pairs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str) -> tuple[torch.Tensor,
                                                                                                  torch.Tensor, str]:
    """The model's own minimal adversarial examples for x (blindspots.attacks), and which pairs to use: the
    successful ones that moved (images the model already misclassifies give x_adv = x and are left out)."""
    from ..attacks import Misclassification, fgsm_min_epsilon, lbfgs_attack

    if attack == "lbfgs":
        result = lbfgs_attack(model, x, Misclassification(y))
        how = "box-constrained L-BFGS, minimal perturbation"
    else:
        result = fgsm_min_epsilon(model, x, Misclassification(y))
        how = "FGSM at each image's smallest fooling ε"
    x_adv = result.x_adv.detach().to(x.device)
    keep = result.success.to(x.device) & ((x_adv - x).flatten(1).norm(dim=1) > 0)
    return x_adv, keep, how


def _bound_check(tm: TrainedModel, args: argparse.Namespace, product: float) -> dict[str, Any]:
    """The product bound against the model's own adversarial pairs: the same `bound_check` as the report's §4.3."""
    test = load_mnist("test", dataset=args.dataset, subset=args.pairs, data_dir=args.data_dir)
    model = tm.model.eval()
    device = next(model.parameters()).device
    x, y = test.images.to(device), test.labels.to(device)
    x_adv, keep, how = _adversarial_pairs(model, x, y, args.attack)
    if not bool(keep.any()):
        raise InputError(f"the {args.attack} attack found no adversarial pair among {len(x)} test images; "
                         "try more --pairs or the other --attack")
    return {"images": len(x), "attack": how, **bound_check(model, x[keep], x_adv[keep], product)}


def _spectral(args: argparse.Namespace) -> int:
    tm = _model(args)
    shape = tuple(load_mnist("test", dataset=args.dataset, subset=1, data_dir=args.data_dir).images.shape[1:])
    bounds = layer_bounds(tm.model, shape, verify=True, iters=args.iters)
    product = math.prod(b.bound for b in bounds)
    check = _bound_check(tm, args, product) if args.pairs > 0 else None
    if args.json:
        print_json({"spec": tm.meta["spec"], "checkpoint": str(tm.path), "input_shape": list(shape),
                    "layers": [b.to_dict() for b in bounds], "product": product, "check": check})
        return 0
    print(f"{tm.meta['spec']} (test error {pct(tm.meta['test_error'], 2)}, {tm.path})")
    print(format_bound_table(bounds))
    if check:
        print(f"check on {check['pairs']} adversarial pairs of {check['images']} test images ({check['attack']}): "
              f"max ‖f(x+r) − f(x)‖/‖r‖ = {check['ratio_max']:.4g} (median {check['ratio_median']:.4g}), "
              f"max local ‖J_f(x)‖ = {check['local_jacobian_max']:.4g}; the bound "
              f"{'holds' if check['holds'] else 'FAILS'} and is {check['looseness_vs_ratio']:.3g}x the largest "
              f"ratio, {check['looseness_vs_local']:.3g}x the largest local norm.")
    return 0
