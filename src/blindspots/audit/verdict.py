"""The audit's verdict: robust accuracy at each ε as the envelope of every attack the audit ran on every image
(APGD, the minimal attacks clipped to ε, independent PGD, restarts, Square L∞ and L2, and the examples transferred
from the other audited models), each candidate projected onto the ε-ball and re-checked by a fresh forward pass of the model
itself; each image's best example (lowest margin) is kept, saved, and verified once more."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..models import predict, predict_logits
from .common import Ctx, robust_curve
from .expectation import expected_verdict
from .runner import load_tensors, save_tensors


def project(cand: torch.Tensor, x: torch.Tensor, eps: float, norm: str, bounds: tuple[float, float]) -> torch.Tensor:
    """cand moved onto the ε-ball around x (clipped per pixel for L∞, scaled down for L2) and into the bounds."""
    d = cand - x
    if norm == "linf":
        d = d.clamp(-eps, eps)
    else:
        size = d.flatten(1).norm(dim=1).clamp(min=1e-12)
        d = d * (eps / size).clamp(max=1).view(-1, *([1] * (x.dim() - 1)))
    return (x + d).clamp(*bounds)


def _sources(ctx: Ctx, folders: dict[str, Path], others: dict[str, Path]) -> dict[str, dict[str, torch.Tensor]]:
    """Per norm, every candidate set: name -> examples [N, ...] (one for every ε) or [N, K, ...] (one per ε); NaN
    rows: not run on that image (or failed)."""
    n = ctx.n
    lin: dict[str, torch.Tensor] = {}
    l2: dict[str, torch.Tensor] = {}
    curves = load_tensors(folders["curves"], "examples.safetensors")
    lin["APGD"], l2["APGD"] = curves["linf"], curves["l2"]
    for name, t in load_tensors(folders["minimal_linf"], "examples.safetensors").items():
        lin[f"{name} (clipped)"] = t
    for name, t in load_tensors(folders["minimal_l2"], "examples.safetensors").items():
        l2[f"{name} (clipped)"] = t
    sanity = load_tensors(folders["sanity"], "examples.safetensors")
    for key, label in (("grid_adv", "PGD per ε"), ("restarts_adv", "PGD restarts"), ("free_adv", "Square"),
                       ("free_l2_adv", "Square")):
        t = sanity[key]
        if t.shape[0] < n:  # --fast: run on the first images only
            t = torch.cat([t, torch.full((n - t.shape[0], *t.shape[1:]), math.nan, dtype=t.dtype)])
        (l2 if key == "free_l2_adv" else lin)[label] = t
    for name, folder in others.items():
        lin[f"transfer from {name}"] = load_tensors(folder, "transfer_set.safetensors")["x_adv"]
    # a source run on no image at all (a stage that stood down) is left out
    return {norm: {k: t for k, t in d.items() if not bool(torch.isnan(t).all())} for norm, d in (("linf", lin),
                                                                                              ("l2", l2))}


def verdict_stage(ctx: Ctx, clean: dict[str, Any], folders: dict[str, Path],
                  others: dict[str, Path]) -> dict[str, Any]:
    """Robust accuracy per ε and norm under every attack the audit ran, each example re-verified; per source the
    images it ran on, broke, and broke alone."""
    cfg = ctx.config
    correct = torch.tensor(clean["correct"], dtype=torch.bool)
    inputs = ctx.inputs(adaptive=ctx.adaptive, stages={k: v.name for k, v in folders.items()},
                        others={k: v.name for k, v in others.items()})

    def compute(folder: Path | None) -> dict[str, Any]:
        x, y = ctx.x.cpu(), ctx.y.cpu()
        model = ctx.model.module
        out: dict[str, Any] = {}
        saved: dict[str, torch.Tensor] = {}
        for norm, grid in (("linf", cfg.linf_grid), ("l2", cfg.l2_grid)):
            sources = _sources(ctx, folders, others)[norm]
            if ctx.eot > 1:  # random outputs: every number an expectation over R draws (audit.expectation)
                out[norm], saved[norm] = expected_verdict(
                    model, x, y, grid, sources, lambda c, eps: project(c, x, eps, norm, cfg.bounds),
                    cfg.effort.draws)
                out[norm]["eps"] = list(grid)
                continue
            best = x.clone()
            per: dict[str, dict[str, list[int] | int]] = {}
            curve_broken, bests = [], []
            for k, eps in enumerate(grid):
                margin = torch.full((ctx.n,), math.inf, dtype=torch.float64)
                cands = {"(carried from the smaller ε)": best} if k else {}
                hits: dict[str, torch.Tensor] = {}
                for name, t in {**cands, **sources}.items():
                    c = t[:, k] if t.dim() == x.dim() + 1 else t
                    ran = ~torch.isnan(c).flatten(1).any(1)
                    c = project(torch.where(torch.isnan(c), x, c).to(x.dtype), x, eps, norm, cfg.bounds)
                    z = predict_logits(model, c, batch_size=1000).double()
                    rival = z.scatter(1, y.view(-1, 1), -math.inf).amax(1)
                    mg = z.gather(1, y.view(-1, 1))[:, 0] - rival
                    hit = ran & correct & (z.argmax(1) != y)
                    better = hit & (mg < margin)
                    best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), c, best)
                    margin = torch.where(better, mg, margin)
                    hits[name] = hit
                    if name in sources:
                        rec = per.setdefault(name, {"images": int(ran.sum()), "broke": [], "only": []})
                        rec["broke"].append(int(hit.sum()))  # type: ignore[union-attr]
                verified = predict(model, best, batch_size=1000) != y  # the kept examples, verified once more
                broken = verified | ~correct
                for name in sources:
                    alone = hits[name] & ~torch.stack([h for o, h in hits.items() if o != name] or
                                                      [torch.zeros_like(hits[name])]).any(0)
                    per[name]["only"].append(int(alone.sum()))  # type: ignore[union-attr]
                curve_broken.append(broken)
                bests.append(best.clone())
            saved[norm] = torch.stack(bests, 1)
            out[norm] = {"eps": list(grid), "robust": robust_curve(torch.stack(curve_broken, 1)),
                         "broken": [int(b.sum()) for b in curve_broken], "sources": per}
        save_tensors(folder, "best_examples.safetensors", saved)
        out["n"] = ctx.n
        return out

    return ctx.runner.run(f"verdict-{ctx.model.name}", inputs, compute, collective=False)[0]


__all__ = ["verdict_stage", "project"]
