""""How minimal is minimal?": the exact minimal L∞ (and L1, L2) perturbation of small ReLU nets (blindspots.verify,
a mixed-integer program solved by HiGHS; L2 a mixed-integer quadratic one solved by SCIP) next to the distortion the
project's attacks find, each as a ratio to it.

The nets (784-20-20-10, 784-50-50-10) are not in the zoo (its FC nets are sigmoid, which the exact program cannot
encode): each is a plain nn.Sequential trained here with one fixed recipe (models.controls.fit_control: Adam 1e-3,
batches of 64, seeded) and saved in its stage folder. The attacked images: the first `n_images` test images, in the
experiment's seeded order, that the net classifies correctly. Every attack's example is re-checked by a forward
pass before it counts; the exact search starts from the closest of them, so exact ≤ every attack by construction
and each ratio is ≥ 1."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ... import __version__
from ...attacks import Misclassification, attack_mode, run_attack
from ...attacks.pgd import pgd_linf_per_image
from ...data import load_mnist
from ...data.datasets import subset_order
from ...models.controls import fit_control, relu_mlp
from ...stages import StageRunner
from ...verify import certified_radius, exact_minimal
from .profiles import MinimalSizes

ATTACKS = ("lbfgs", "minimal-l2", "deepfool", "cw", "fgsm-min", "pgd-bisection")



def relu_net(hidden: str) -> nn.Sequential:
    """784-h1-h2-10 with ReLUs from a widths string such as "20-20"."""
    return relu_mlp(*(int(h) for h in hidden.split("-")))


def _pgd_bisection(model: nn.Module, x: torch.Tensor, crit: Misclassification, seed: int, rounds: int = 12,
                   steps: int = 20) -> torch.Tensor:
    """Per image the smallest-ε PGD-L∞ example of a bisection on [0, 1] (NaN where PGD never succeeded)."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = torch.zeros(len(x), dtype=torch.float64), torch.ones(len(x), dtype=torch.float64)
    best = torch.full_like(x, math.nan)
    with attack_mode(model) as m:
        for _ in range(rounds + 1):
            mid = torch.where(torch.isnan(best).flatten(1).any(1), hi, (lo + hi) / 2)
            adv = pgd_linf_per_image(m, x, crit, mid.float(), steps=steps, gen=gen)
            with torch.no_grad():
                ok = crit.is_adversarial(m(adv))
            best[ok] = adv[ok]
            hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
    return best


def _distance(adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    d = (adv - x).flatten(1).double()
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1) if norm == "l2" else d.abs().sum(1)


def _gaps(found: dict[str, torch.Tensor], ok: dict[str, torch.Tensor], x: torch.Tensor, exact: Any,
          norm: str) -> dict[str, Any]:
    proven = torch.tensor([s == "optimal" for s in exact.status])
    out = {}
    for name, adv in found.items():
        hit = ok[name] & proven & (exact.value > 0)
        ratio = _distance(adv, x, norm)[hit] / exact.value[hit]
        out[name] = {"found": int(ok[name].sum()), "compared": int(hit.sum()),
                     "median_distance": float(_distance(adv, x, norm)[ok[name]].median()) if bool(ok[name].any())
                     else None,
                     "median_ratio": float(ratio.median()) if ratio.numel() else None,
                     "worst_ratio": float(ratio.max()) if ratio.numel() else None}
    return out


def _exact_record(exact: Any) -> dict[str, Any]:
    proven = torch.tensor([s == "optimal" for s in exact.status])
    return {"statuses": {s: exact.status.count(s) for s in sorted(set(exact.status))},
            "value": [None if math.isnan(v) else v for v in exact.value.tolist()],
            "lower": exact.lower.tolist(), "upper": exact.upper.tolist(),
            "median": float(exact.value[proven].median()) if bool(proven.any()) else None,
            "proven_bounds_median": ([float(exact.lower.median()), float(exact.upper.median())]
                                     if not bool(proven.all()) else None),
            "solve_seconds_median": float(exact.solve_time.median()), "solve_seconds_max": float(exact.solve_time.max())}


def minimal_section(runner: StageRunner, sizes: MinimalSizes, *, seed: int = 0) -> dict[str, Any]:
    """Per net: its test error, the exact minimal L∞ (L1 on the first l1_images) on n_images test images, the CROWN
    certified radius, and each attack's distance and ratio to the exact value."""
    test = load_mnist("test")
    order = torch.from_numpy(subset_order(len(test), seed))
    nets: dict[str, Any] = {}
    for hidden in sizes.nets:
        name = f"784-{hidden}-10"
        recipe = {"hidden": hidden, "optimizer": "Adam(1e-3)", "batch": 64, "train_subset": sizes.train_subset,
                  "epochs": sizes.epochs, "seed": seed, "version": __version__}

        def train_compute(folder: Path, hidden: str = hidden) -> dict[str, Any]:
            from safetensors.torch import save_file

            from ...io import file_digest

            model = fit_control(relu_net(hidden), sizes.train_subset, sizes.epochs, seed=seed)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
            with torch.no_grad():
                err = float((model(test.images).argmax(1) != test.labels).double().mean())
            return {"test_error": err, "weights_sha256": file_digest(folder / "model.safetensors", "sha256")}

        trained, tfolder = runner.run(f"minimal train {name}", recipe, train_compute)
        inputs = {"net": trained["weights_sha256"], "n_images": sizes.n_images, "time_limit": sizes.time_limit,
                  "l1_images": sizes.l1_images, "l2_images": sizes.l2_images, "l2_time_limit": sizes.l2_time_limit,
                  "seed": seed, "attacks": ATTACKS}

        def exact_compute(folder: Path, hidden: str = hidden, tfolder: Path = tfolder) -> dict[str, Any]:
            from safetensors.torch import load_file

            model = relu_net(hidden)
            model.load_state_dict(load_file(str(tfolder / "model.safetensors")))
            model.eval()
            with torch.no_grad():
                correct = model(test.images[order]).argmax(1) == test.labels[order]
            chosen = order[correct.nonzero().flatten()[:sizes.n_images]]
            x, y = test.images[chosen], test.labels[chosen]
            crit = Misclassification(y)
            t0, seconds = time.perf_counter(), {}
            found = {a: run_attack(a, model, x, crit).x_adv for a in ATTACKS if a != "pgd-bisection"}
            found["pgd-bisection"] = _pgd_bisection(model, x, crit, seed)
            seconds["attacks"] = time.perf_counter() - t0
            ok = {}
            with torch.no_grad():
                for a, adv in found.items():
                    ok[a] = ~torch.isnan(adv).flatten(1).any(1) & crit.is_adversarial(model(torch.nan_to_num(adv)))
            out: dict[str, Any] = {"images": len(y), "test_indices": chosen.tolist()}
            for norm, n, limit in (("linf", len(y), sizes.time_limit),
                                   ("l1", min(sizes.l1_images, len(y)), sizes.time_limit),
                                   ("l2", min(sizes.l2_images, len(y)), sizes.l2_time_limit)):
                if n == 0:
                    continue
                dist = {a: torch.where(ok[a], _distance(adv, x, norm), math.inf) for a, adv in found.items()}
                pick = torch.stack(list(dist.values())).argmin(0)
                upper = torch.stack(list(found.values()))[pick, torch.arange(len(y))]
                t0 = time.perf_counter()
                exact = exact_minimal(model, x[:n], y[:n], norm=norm, time_limit=limit, upper=upper[:n],
                                      attack=False)
                seconds[f"exact {norm}"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                radius = certified_radius(model, x[:n], y[:n], norm=norm)
                seconds[f"certified {norm}"] = time.perf_counter() - t0
                out[norm] = {"images": n, "exact": _exact_record(exact),
                             "certified_median": float(radius.median()),
                             "attacks": _gaps({a: v[:n] for a, v in found.items()}, {a: v[:n] for a, v in ok.items()},
                                              x[:n], exact, norm)}
            out["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
            return out

        result, _ = runner.run(f"minimal exact {name}", inputs, exact_compute)
        nets[name] = {"test_error": trained["test_error"], "recipe": recipe,
                      **{k: v for k, v in result.items() if k != "_stage"}}
    return {"nets": nets, "sizes": {"nets": list(sizes.nets), "n_images": sizes.n_images,
                                    "time_limit": sizes.time_limit, "l1_images": sizes.l1_images,
                                    "l2_images": sizes.l2_images, "l2_time_limit": sizes.l2_time_limit}}


__all__ = ["minimal_section", "relu_net", "ATTACKS"]
