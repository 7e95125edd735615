"""The analysis stages of an audit: Lipschitz bounds and certified radii, single units vs random directions, the
transfer matrix, and the sanity runs (independent PGD per ε, restarts, a gradient-free attack in L∞ and L2, an
unbounded ε)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis.spectral import layer_bounds
from ..analysis.units import default_layers, layer_names, unit_analysis
from ..attacks import Misclassification, Normalized
from ..attacks.pgd import pgd
from ..errors import BlindspotsError
from ..models import predict
from ..models.store import train
from .common import Ctx, as_list, attack, from_list, quantiles
from .config import QUERY_CHUNK, first
from .models import AuditModel, state_hash
from .runner import AuditRunner, chunk_seed, load_tensors, save_tensors


def lipschitz_stage(ctx: Ctx, clean: dict[str, Any], minimal_l2: dict[str, Any]) -> dict[str, Any]:
    """Per-layer ℓ2 Lipschitz bounds (analysis.spectral), their product L, and per correctly classified image the
    certified radius margin / (√2·L): no L2 perturbation smaller than it can change the label, so it must not
    exceed the smallest adversarial L2 found."""

    def compute(folder: Path | None) -> dict[str, Any]:
        m = ctx.model
        inner, shape = m.inner, tuple(ctx.x.shape[1:])
        rows: list[dict[str, Any]] = []
        if isinstance(m.module, Normalized):
            std = m.module.std.detach().cpu().flatten()
            rows.append({"name": "normalize", "kind": "Normalized", "bound": float(1 / std.min()),
                         "method": "(x − mean) / std: 1 / min std", "exact": True})
        try:
            rows += [b.to_dict() for b in layer_bounds(inner, shape)]
        except BlindspotsError as exc:
            return {"supported": False, "reason": str(exc), "layers": rows}
        product = math.prod(r["bound"] for r in rows)
        margin = torch.from_numpy(from_list(clean["margin"]))
        correct = torch.tensor(clean["correct"], dtype=torch.bool)
        radius = torch.where(correct, margin.clamp(min=0) / (math.sqrt(2) * product), torch.zeros_like(margin))
        best = torch.from_numpy(from_list(minimal_l2["best"]["sizes"]))
        known = correct & torch.isfinite(best)
        over = known & (radius > best * (1 + 1e-6) + 1e-9)
        ratio = (best[known] / radius[known].clamp(min=1e-300)).numpy()
        return {"supported": True, "layers": [{k: r.get(k) for k in ("name", "kind", "bound", "method", "exact")}
                                              for r in rows],
                "product": product, "radius": {"stats": quantiles(radius[correct].numpy()),
                                               "sizes": as_list(radius)},
                "checked": int(known.sum()), "violations": int(over.sum()),
                "first_violation": int(over.nonzero()[0]) if bool(over.any()) else None,
                "found_over_certified": quantiles(ratio)}

    return ctx.runner.run(f"lipschitz-{ctx.model.name}", ctx.inputs(), compute, collective=False)[0]


def _units_layer(m: AuditModel, layer: str | None) -> tuple[str | None, str]:
    """(layer name in the attacked module, why) — the given one, else the last fully connected hidden layer."""
    prefix = "model." if isinstance(m.module, Normalized) else ""
    if layer:
        return prefix + layer, "chosen with --layer"
    found = default_layers(m.inner)
    if found:
        return prefix + found[-1], "the last fully connected hidden layer"
    return None, ("no fully connected hidden layer found (looked for an activation right after a Linear layer of "
                  f"an nn.Sequential); pass --layer NAME, one of: {', '.join(layer_names(m.inner)) or '(none)'}")


def units_stage(ctx: Ctx) -> dict[str, Any]:
    """§3 of Szegedy et al.: do single units of a layer pick more coherent top-k images than random directions?"""
    e = ctx.config.effort
    layer, why = _units_layer(ctx.model, ctx.config.layer)

    def compute(folder: Path | None) -> dict[str, Any]:
        if layer is None:
            return {"skipped": why}
        n = min(ctx.n, e.units_images)
        try:
            a = unit_analysis(ctx.model.module, layer, ctx.x[:n], ctx.y[:n].cpu(), k=e.unit_k,
                              n_directions=e.unit_directions, seed=ctx.config.seed, model_name=ctx.model.name)
        except BlindspotsError as exc:
            return {"skipped": f"layer {layer}: {exc}"}
        keep = ("layer", "width", "k", "n_images", "summary", "tests", "told_apart", "verdict", "chance",
                "ambiguous_units", "ambiguous_random", "alpha")
        return {**{k: v for k, v in a.to_dict().items() if k in keep}, "why": why}

    return ctx.runner.run(f"units-{ctx.model.name}", ctx.inputs(layer=layer), compute, collective=False)[0]


def _square_l2(ctx: Ctx, x: torch.Tensor, y: torch.Tensor, err: torch.Tensor, gradient: torch.Tensor, queries: int,
               seed: int, norm: str = "l2", key: str = "free_l2") -> dict[str, torch.Tensor]:
    """Square-L2 (or, with `norm`, L∞) at each ε of its grid in ascending order, on the images neither the gradient
    attacks (`gradient` [r, K]) nor Square at a smaller ε broke (its examples carried up). Per image and ε: the
    example (NaN where Square never ran on the image), whether Square broke it (clean errors count), whether it
    ran there."""
    grid = ctx.config.l2_grid if norm == "l2" else ctx.config.linf_grid
    broken, has = err.cpu().clone(), torch.zeros(x.shape[0], dtype=torch.bool)
    current = x.cpu().clone()
    adv, ran, hit = [], [], []
    for k, eps in enumerate(grid):
        todo = ~broken & ~gradient[:, k]
        if bool(todo.any()):
            r = attack("square", ctx, x[todo.to(x.device)], Misclassification(y[todo.to(y.device)]), [eps],
                       norm=norm, n_queries=queries, seed=seed * 7 + k)
            idx = todo.nonzero().flatten()
            current[idx] = r.x_adv[0].cpu()
            broken[idx[r.success[0].cpu()]] = True
            has |= todo
        adv.append(torch.where(has.view(-1, 1, 1, 1), current, torch.full_like(current, math.nan)))
        ran.append(todo)
        hit.append(broken.clone())
    return {f"{key}_adv": torch.stack(adv, 1), f"{key}_ran": torch.stack(ran, 1), key: torch.stack(hit, 1)}


def sanity_stage(ctx: Ctx, clean: dict[str, Any], curves: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """PGD-L∞ at each ε run independently (not carried over from smaller ε), PGD with restarts at the reference ε,
    the gradient-free Square attack (L∞ there; L2 at each L2 ε on the images the gradient L2 attacks left robust),
    and PGD at an unbounded ε = hi − lo; on every image (--fast: the first ones), through the same adaptive module
    as the curves. Square gets `square_queries_masked` queries where the gradient probe found masking (AutoAttack's
    5000), else `square_queries`; Square runs on chunks of QUERY_CHUNK images, the rest on chunks of CHUNK. The
    examples are saved for the verdict."""
    e, cfg = ctx.config.effort, ctx.config
    n = first(e.sanity_images, ctx.n)
    correct = torch.tensor(clean["correct"], dtype=torch.bool)
    free = "square"  # the gradient-free attack (its name goes into the results and the report)
    queries = e.square_queries_masked if ctx.adaptive.get("bpda") or ctx.gradient_free else e.square_queries
    grid_l2 = list(cfg.l2_grid)
    gradient_l2 = torch.tensor(curves["broken_l2"], dtype=torch.bool).T  # [N, K]: broken by APGD-L2 or a minimal

    def compute(folder: Path | None) -> dict[str, Any]:
        def fn(i: int, rows: slice) -> dict[str, torch.Tensor]:
            x, crit, err = ctx.x[rows], ctx.crit(rows), (~correct[rows]).to(ctx.x.device)
            m = ctx.target
            kw = {"steps": e.pgd_steps, "bounds": cfg.bounds}
            g = pgd(m, x, crit, list(cfg.linf_grid), seed=chunk_seed(cfg.seed, i, 100), **kw)
            grid = g.success | err
            one = grid[cfg.linf_grid.index(cfg.eps_ref)]
            r = pgd(m, x, crit, [cfg.eps_ref], restarts=e.restarts, seed=chunk_seed(cfg.seed, i, 101), **kw)
            many = r.success[0] | err
            unbounded = pgd(m, x, crit, [cfg.span], seed=chunk_seed(cfg.seed, i, 102), **kw).success[0] | err
            return {"grid": grid.T.cpu(), "one": one.cpu(), "many": many.cpu(), "unbounded": unbounded.cpu(),
                    "grid_adv": g.x_adv.transpose(0, 1).cpu(), "restarts_adv": r.x_adv[0].cpu(),
                    "gradient_l2": gradient_l2[rows]}

        def queried(i: int, rows: slice) -> dict[str, torch.Tensor]:  # Square, on chunks of QUERY_CHUNK images
            x, crit, err = ctx.x[rows], ctx.crit(rows), (~correct[rows]).to(ctx.x.device)
            l2 = _square_l2(ctx, x, ctx.y[rows], err, gradient_l2[rows], queries, chunk_seed(cfg.seed, i, 104))
            if ctx.gradient_free:  # Square L∞ at every ε: the only L∞ attack that can run
                k = len(cfg.linf_grid)
                li = _square_l2(ctx, x, ctx.y[rows], err, torch.zeros(x.shape[0], k, dtype=torch.bool), queries,
                                chunk_seed(cfg.seed, i, 103), norm="linf", key="free_linf")
                ref = cfg.linf_grid.index(cfg.eps_ref)
                return {"free": li["free_linf"][:, ref], "free_adv": li["free_linf_adv"], **l2}
            sq = attack(free, ctx, x, crit, [cfg.eps_ref], n_queries=queries, seed=chunk_seed(cfg.seed, i, 103))
            return {"free": (sq.success[0] | err).cpu(), "free_adv": sq.x_adv[0].cpu(), **l2}

        if ctx.gradient_free:  # no gradient attack can run: their examples NaN (not run), their results None
            f = {"gradient_l2": gradient_l2[:n], "grid_adv": torch.full((n, len(cfg.linf_grid), *ctx.x.shape[1:]),
                                                                          math.nan),
                 "restarts_adv": torch.full((n, *ctx.x.shape[1:]), math.nan)}
        else:
            f = ctx.runner.map(fn, n, f"sanity runs {ctx.model.name}")
        f |= ctx.runner.map(queried, n, f"Square {ctx.model.name}", chunk=QUERY_CHUNK)
        save_tensors(folder, "examples.safetensors",
                     {k: f[k] for k in ("grid_adv", "restarts_adv", "free_adv", "free_l2_adv")})
        ra: dict[str, float | None] = {k: float((~f[k]).double().mean()) if k in f else None
                                       for k in ("one", "many", "unbounded", "free")}
        ra["any attack"] = float(1 - torch.tensor(curves["broken_ref"][:n], dtype=torch.float64).mean())
        grad, sq_l2 = f["gradient_l2"], f["free_l2"]
        return {"images": n, "eps": list(cfg.linf_grid), "eps_ref": cfg.eps_ref, "span": cfg.span,
                "gradients_unavailable": ctx.gradient_free,
                "independent_pgd": [float(v) for v in (~f["grid"]).double().mean(0).tolist()] if "grid" in f else
                [math.nan] * len(cfg.linf_grid),
                "robust": ra, "restarts": e.restarts, "gradient_free": free,
                "gradient_free_only": int((f["free"] & ~f["one"]).sum()) if "one" in f else int(f["free"].sum()),
                "gradient_free_params": {"n_queries": queries,
                                         "masked": bool(ctx.adaptive.get("bpda") or ctx.gradient_free)},
                "gradient_free_l2": {  # Square-L2 on the images the gradient L2 attacks left robust, per L2 ε
                    "eps": grid_l2, "ran": [int(v) for v in f["free_l2_ran"].sum(0).tolist()],
                    "only": [int(v) for v in (sq_l2 & ~grad).sum(0).tolist()],
                    "robust_gradient": [float(v) for v in (~grad).double().mean(0).tolist()],
                    "robust_with_square": [float(v) for v in (~(grad | sq_l2)).double().mean(0).tolist()]}}

    return ctx.runner.run(f"sanity-{ctx.model.name}", ctx.inputs(gradient_free=free, adaptive=ctx.adaptive), compute)


def _zoo_model(spec: str, device: str) -> tuple[nn.Module, str]:
    tm = train(spec, device=device, progress=False)
    return tm.model.eval(), str(tm.meta.get("weights_sha256") or state_hash(tm.model))


def transfer_stage(runner: AuditRunner, ctxs: list[Ctx], curves: dict[str, tuple[dict[str, Any], Path]],
                   zoo: tuple[str, ...]) -> dict[str, Any]:
    """Error of each target model (columns: the audited ones, then the --zoo ones) on each audited model's APGD-L∞
    examples at the reference ε (rows); the diagonal is white-box."""
    first = ctxs[0]
    cfg = first.config
    shape = tuple(first.x.shape[1:])
    zoo_ok = shape == (1, 28, 28) and cfg.bounds == (0.0, 1.0) and cfg.mean is None
    zoo_models = {spec: _zoo_model(spec, cfg.device) for spec in zoo} if zoo and zoo_ok else {}
    inputs = {"sources": {c.model.name: c.model.key for c in ctxs}, "data": first.data_id,
              "eps_ref": cfg.eps_ref, "zoo": {k: v[1] for k, v in zoo_models.items()},
              "curves": {k: v[1].name for k, v in curves.items()}}

    def compute(folder: Path | None) -> dict[str, Any]:
        targets: dict[str, nn.Module] = {c.model.name: c.model.module for c in ctxs}
        targets.update({f"{spec} (zoo)": m for spec, m in zoo_models.items()})
        y = first.y.cpu()
        clean = {name: float((predict(m, first.x) != y).double().mean()) for name, m in targets.items()}
        matrix: dict[str, dict[str, float]] = {}
        for c in ctxs:
            x_adv = load_tensors(curves[c.model.name][1], "transfer_set.safetensors")["x_adv"]
            matrix[c.model.name] = {name: float((predict(m, x_adv) != y).double().mean())
                                    for name, m in targets.items()}
        return {"eps_ref": cfg.eps_ref, "sources": [c.model.name for c in ctxs], "targets": list(targets),
                "matrix": matrix, "clean_error": clean,
                "zoo_skipped": None if zoo_ok or not zoo else
                f"--zoo needs MNIST-shaped data (1, 28, 28) in [0, 1] without --mean/--std; the data is {shape}"}

    return runner.run("transfer", inputs, compute, collective=False)[0]


__all__ = ["lipschitz_stage", "units_stage", "sanity_stage", "transfer_stage"]
