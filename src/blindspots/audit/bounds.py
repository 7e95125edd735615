"""The audit's certified side (blindspots.verify): robust accuracy per ε as a bracket [certified, attacked], and on
the first images of a small piecewise-linear model the exact minimal L∞ perturbation, with each attack's gap to it.

    certified robust accuracy ≤ true robust accuracy ≤ attacked robust accuracy (the verdict)
    certified radius ≤ exact minimal distortion ≤ the smallest distortion any attack found

CROWN runs batched on every image at every ε (IBP where the model has more hidden units than the budget: CROWN's
cost grows with them); the exact MILP runs on an image only while it fits the stated budget: at most
`exact_max_unstable` unstable units (from CROWN's pre-activation bounds over the ball of the best attack's
radius, the program's domain; IBP's, an upper bound of that count, for a model above the CROWN unit budget) and
`exact_time_limit` seconds. The audit's certified radius cuts the exact program; the bracket can still fail: a
re-verified point inside the radius, a solver at odds with the forward pass, or (on the first `exact_check_images`
images) a second solve without the cut that finds less, is FLAGged and counted as a violation."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..verify import (UnsupportedLayerError, certified, certified_radius, exact_minimal, hidden_units, network,
                      unstable_units)
from .common import Ctx, as_list, from_list, quantiles
from .config import first
from .runner import load_tensors


def _linf_incumbents(folder: Path, x: torch.Tensor) -> torch.Tensor:
    """Per image the closest L∞ example of the minimal-L∞ stage (NaN rows where none)."""
    best = torch.full_like(x, math.nan, dtype=torch.float64)
    size = torch.full((x.shape[0],), math.inf, dtype=torch.float64)
    for t in load_tensors(folder, "examples.safetensors").values():
        t = t.double()
        have = ~torch.isnan(t).flatten(1).any(1)
        d = torch.where(have, (torch.nan_to_num(t) - x.double()).flatten(1).abs().amax(1), math.inf)
        better = d < size
        best[better], size[better] = t[better], d[better]
    return best


def bounds_stage(ctx: Ctx, clean: dict[str, Any], minimal_linf: dict[str, Any], linf_folder: Path,
                 verdict: dict[str, Any]) -> dict[str, Any]:
    """Certified robust accuracy per ε and norm (CROWN, or IBP above the unit budget) beside the verdict's; on the
    first `exact_images` images, the certified L∞ radius and, within the budget, the exact minimal L∞ (MILP)."""
    e, cfg = ctx.config.effort, ctx.config
    inputs = ctx.inputs(bounds_effort=ctx.bounds_effort(), minimal_linf=linf_folder.name, verdict=verdict["_stage"]["result_sha256"])

    def compute(folder: Path | None) -> dict[str, Any]:
        x, y = ctx.x.cpu(), ctx.y.cpu()
        module = copy.deepcopy(ctx.model.module).cpu().eval()
        try:
            net = network(module, tuple(x.shape[1:]))
        except UnsupportedLayerError as exc:
            return {"supported": False, "reason": str(exc)}
        units = hidden_units(net, tuple(x.shape[1:]))
        method = e.certify_method if units <= e.certify_max_units else "ibp"
        why = (f"{units} hidden units ≤ {e.certify_max_units}" if method == e.certify_method else
               f"IBP, not {e.certify_method}: {units} hidden units > the budget of {e.certify_max_units}")
        out: dict[str, Any] = {"supported": True, "method": method, "why": why, "hidden_units": units,
                               "piecewise_linear": net.piecewise_linear, "seconds": {}}
        t0 = time.perf_counter()
        for norm, grid in (("linf", cfg.linf_grid), ("l2", cfg.l2_grid)):
            ok = [certified(net, x, y, eps, norm=norm, method=method, bounds=cfg.bounds, batch_size=100)
                  for eps in grid]
            attacked = verdict[norm]["robust"]
            out[norm] = {"eps": list(grid), "certified": [float(c.double().mean()) for c in ok],
                         "attacked": list(attacked), "certified_count": [int(c.sum()) for c in ok]}
        out["seconds"]["certified accuracy"] = round(time.perf_counter() - t0, 3)
        out["exact"] = _exact(ctx, module, net, method, clean, minimal_linf, linf_folder, out["seconds"])
        return out

    return ctx.runner.run(f"bounds-{ctx.model.name}", inputs, compute, collective=False)[0]


def _exact(ctx: Ctx, module: torch.nn.Module, net: Any, method: str, clean: dict[str, Any], minimal_linf: dict[str, Any],
           linf_folder: Path, seconds: dict[str, float]) -> dict[str, Any]:
    """On the first K images: certified L∞ radius, best attack, and the exact minimum where the budget allows."""
    e, cfg = ctx.config.effort, ctx.config
    k = first(e.exact_images, ctx.n)
    x, y = ctx.x[:k].cpu(), ctx.y[:k].cpu()
    correct = torch.tensor(clean["correct"][:k], dtype=torch.bool)
    best = torch.from_numpy(from_list(minimal_linf["best"]["sizes"][:k]))
    found = correct & torch.isfinite(best)
    t0 = time.perf_counter()
    radius = torch.zeros(k, dtype=torch.float64)
    if bool(correct.any()):  # bisection on [0, best attack] (no certificate can exceed it), or the whole box
        eps_max = torch.where(found, best, torch.full_like(best, cfg.span))
        radius[correct] = certified_radius(net, x[correct], y[correct], norm="linf", method=method,
                                           eps_max=eps_max[correct], bounds=cfg.bounds)
    seconds["certified radius"] = round(time.perf_counter() - t0, 3)
    rec: dict[str, Any] = {"images": k, "norm": "linf", "max_unstable": e.exact_max_unstable,
                           "time_limit": e.exact_time_limit, "radius": as_list(radius), "best_attack": as_list(best),
                           "correct": as_list(correct)}
    nan = torch.full((k,), math.nan, dtype=torch.float64)
    value, lower, upper, status = nan.clone(), nan.clone(), nan.clone(), ["not run"] * k
    flags = [""] * k  # per image: why the exact program's bracket failed (an unsound radius, a solver at odds)
    if not net.piecewise_linear:
        rec["skipped"] = ("not a piecewise-linear net (sigmoid or tanh units): the exact program needs ReLU, maxout "
                          "or max-pooling")
    elif e.exact_images == 0 or not bool(found.any()):
        rec["skipped"] = "no image to run on (exact_images is 0, or no correctly classified image was attacked)"
    else:
        t0 = time.perf_counter()
        unstable = torch.full((k,), -1, dtype=torch.long)
        # CROWN's count is the program's size; above the unit budget CROWN costs one backward pass per unit (half
        # an hour for 500 images of a small CNN), so IBP's count, an upper bound of CROWN's, decides instead
        count_method = "ibp" if method == "ibp" else "crown"
        unstable[found] = unstable_units(net, x[found], best[found], bounds=cfg.bounds, method=count_method)
        seconds["unstable units"] = round(time.perf_counter() - t0, 3)
        rec["unstable"] = [int(v) for v in unstable.tolist()]
        rec["unstable_method"] = count_method
        run = found & (unstable <= e.exact_max_unstable)
        for i in (~run & found).nonzero().flatten().tolist():
            status[i] = "over budget"
        if bool(run.any()):
            t0 = time.perf_counter()
            upper_x = _linf_incumbents(linf_folder, ctx.x.cpu())[:k]
            idx = run.nonzero().flatten()
            times = []
            # the audit's own radius cuts the program; on the first images a second solve without the cut checks it
            for part, check in ((idx[:e.exact_check_images], True), (idx[e.exact_check_images:], False)):
                if len(part) == 0:
                    continue
                r = exact_minimal(module, x[part], y[part], norm="linf", time_limit=e.exact_time_limit,
                                  upper=upper_x[part], attack=False, bounds=cfg.bounds, radius=radius[part],
                                  check=check)
                value[part], lower[part], upper[part] = r.value, r.lower, r.upper
                for j, i in enumerate(part.tolist()):
                    status[i], flags[i] = r.status[j], r.flags[j]
                times.append(r.solve_time)
            seconds["exact"] = round(time.perf_counter() - t0, 3)
            rec["solve_time"] = quantiles(torch.cat(times).numpy())
            rec["checked_without_cut"] = min(e.exact_check_images, len(idx))
    rec.update({"value": as_list(value), "lower": as_list(lower), "upper": as_list(upper), "status": status,
                "statuses": {s: status.count(s) for s in sorted(set(status))}, "flags": flags})
    proven = torch.tensor([s == "optimal" for s in status], dtype=torch.bool)
    gaps: dict[str, Any] = {}
    for name, a in {**minimal_linf["attacks"], "per-image best": minimal_linf["best"]}.items():
        size = torch.from_numpy(from_list(a["sizes"][:k]))
        hit = proven & torch.isfinite(size) & (value > 0)
        ratio = (size[hit] / value[hit]).numpy()
        gaps[name] = {"images": int(hit.sum()), "median": float(torch.tensor(ratio).median()) if ratio.size else None,
                      "worst": float(ratio.max()) if ratio.size else None}
    rec["gap"] = gaps
    with_exact = proven & found
    rec["checked"] = int(with_exact.sum())
    flagged = torch.tensor([bool(f) for f in flags], dtype=torch.bool)
    # can fail: the radius cuts the program, but a verified point inside it (or a disagreeing check solve) FLAGs
    rec["violations"] = int((((radius > value + 1e-6) | (value > best + 1e-6)) & with_exact | flagged).sum())
    return rec


__all__ = ["bounds_stage"]
