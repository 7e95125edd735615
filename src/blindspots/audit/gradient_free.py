"""The audit of a model whose input gradients cannot be had, even through BPDA (no graph, NaN, a failing
backward): the APGD curves stand down with the reason, keeping their record's shape so the later stages and the
report read it as "not run" (the minimal stages run HopSkipJump alone), and Square runs at every ε instead
(analysis.sanity_stage). Such a model's numbers are gradient-free only: the headline says "not trustworthy"."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .common import Ctx, as_list
from .runner import save_tensors


def curves_skipped(ctx: Ctx, clean: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """The robust-curves stage's record with no APGD run: its examples NaN (not run), the transfer set the clean
    images, every image robust to it except the clean errors."""
    cfg = ctx.config
    err = ~torch.tensor(clean["correct"], dtype=torch.bool)
    nan = torch.full((ctx.n, *ctx.x.shape[1:]), math.nan)

    def compute(folder: Path | None) -> dict[str, Any]:
        save_tensors(folder, "transfer_set.safetensors", {"x_adv": ctx.x.cpu(), "success": err})
        save_tensors(folder, "examples.safetensors",
                     {"linf": torch.stack([nan] * len(cfg.linf_grid), 1), "l2": torch.stack([nan] * len(cfg.l2_grid), 1)})
        return {"eps_ref": cfg.eps_ref, "apgd_steps": 0, "apgd_targets": 0, "adaptive": dict(ctx.adaptive),
                "skipped": ctx.gradient_free,
                "linf": {"eps": list(cfg.linf_grid), "lines": {}}, "l2": {"eps": list(cfg.l2_grid), "lines": {}},
                "broken_ref": as_list(err), "broken_l2": [as_list(err) for _ in cfg.l2_grid]}

    return ctx.runner.run(f"curves-{ctx.model.name}", ctx.inputs(adaptive=ctx.adaptive), compute, collective=False)


__all__ = ["curves_skipped"]
