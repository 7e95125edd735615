"""Robustness of a randomised model as an expectation over its randomness: each candidate example is evaluated
over R draws of the model (the same R seeded draws for every candidate and ε, common random numbers), an image's
robustness is the mean probability that its label survives, and robust accuracy the mean of that over images,
with its spread over draws. Every attack's line is computed so, and each image's best example is carried to the
larger ε unchanged, so the verdict lies below every line and is monotone in ε by construction."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..models import predict_logits
from .runner import seeded_globals

DRAW_SEED = 7_919  # draw r of the model's randomness is seeded from (DRAW_SEED, r)


def draws_correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int) -> tuple[torch.Tensor,
                                                                                                     torch.Tensor]:
    """Per draw and image whether the label survives [R, N], and the mean margin z_y − max_{j≠y} z_j [N]."""
    hits, margins = [], []
    for r in range(draws):
        with seeded_globals(DRAW_SEED * 1_000 + r):
            z = predict_logits(model, x, batch_size=1000).double()
        rival = z.scatter(1, y.view(-1, 1), -math.inf).amax(1)
        margins.append(z.gather(1, y.view(-1, 1))[:, 0] - rival)
        hits.append(z.argmax(1) == y)
    return torch.stack(hits), torch.stack(margins).mean(0)


def expected_verdict(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, grid: tuple[float, ...],
                     sources: dict[str, torch.Tensor], project: Callable[[torch.Tensor, float], torch.Tensor],
                     draws: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Per ε, each image's best example (the lowest probability of its label surviving, then the lowest mean
    margin) over the clean image, the best of the smaller ε and every source's candidate; robust accuracy (mean
    probability), its spread (standard deviation of the per-draw accuracy), and each source's own line (its
    candidate against the clean image, per image). Returns the record and the best examples [N, K, ...]."""
    clean_hits, clean_mg = draws_correct(model, x, y, draws)
    clean_p = clean_hits.double().mean(0)
    best, best_p, best_mg, best_hits = x.clone(), clean_p.clone(), clean_mg.clone(), clean_hits.clone()
    robust, spread, lines, bests = [], [], {name: [] for name in sources}, []
    per: dict[str, dict[str, Any]] = {}
    expand = (-1, *([1] * (x.dim() - 1)))
    for k, eps in enumerate(grid):
        for name, t in sources.items():
            c = t[:, k] if t.dim() == x.dim() + 1 else t
            ran = ~torch.isnan(c).flatten(1).any(1)
            c = project(torch.where(torch.isnan(c), x, c).to(x.dtype), eps)
            hits, mg = draws_correct(model, c, y, draws)
            p = torch.where(ran, hits.double().mean(0), clean_p)
            better = ran & ((p < best_p) | ((p == best_p) & (mg < best_mg)))
            best = torch.where(better.view(expand), c, best)
            best_p, best_mg = torch.where(better, p, best_p), torch.where(better, mg, best_mg)
            best_hits = torch.where(better.view(1, -1), hits, best_hits)
            lines[name].append(float(torch.minimum(p, clean_p).mean()))
            rec = per.setdefault(name, {"images": int(ran.sum()), "broke": [], "only": []})
            rec["broke"].append(int((ran & (p < 0.5) & (clean_p >= 0.5)).sum()))
            rec["only"].append(0)
        robust.append(float(best_p.mean()))
        spread.append(float(best_hits.double().mean(1).std())) if draws > 1 else spread.append(0.0)
        bests.append(best.clone())
    return {"robust": robust, "spread": spread, "lines": lines, "draws": draws, "sources": per,
            "clean_expected": float(clean_p.mean()),
            "broken": [int(round((1 - r) * x.shape[0])) for r in robust]}, torch.stack(bests, 1)


__all__ = ["expected_verdict", "draws_correct", "DRAW_SEED"]
