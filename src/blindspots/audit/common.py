"""What every audit stage shares: the data and model in one place, numbers summarised for JSON, attacks called
with the data's bounds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attacks import ATTACKS, AttackResult, Misclassification, run_attack
from .config import AuditConfig
from .models import AuditModel
from .runner import AuditRunner


BOUNDS_EFFORT = ("certify_", "exact_")  # Effort fields of the bounds stage alone


@dataclass
class Ctx:
    """One model's audit: config, runner, the data (on the device) and the model."""

    config: AuditConfig
    runner: AuditRunner
    x: torch.Tensor
    y: torch.Tensor
    model: AuditModel
    data_id: dict[str, Any]
    attacked: nn.Module | None = None  # what gradient attacks see: the model, or it with BPDA (set after clean)
    eot: int = 1  # gradients averaged per APGD step (> 1 for a model with random outputs)
    gradient_free: str | None = None  # why no input gradient can be had (the gradient attacks then stand down)
    adaptive: dict[str, Any] = field(default_factory=dict)  # why: BPDA layers, EOT, losses

    @property
    def target(self) -> nn.Module:
        """The module gradient attacks run on (its outputs equal the model's; only its gradients may differ)."""
        return self.attacked if self.attacked is not None else self.model.module

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    def crit(self, rows: slice | torch.Tensor) -> Misclassification:
        return Misclassification(self.y[rows])

    def inputs(self, **more: Any) -> dict[str, Any]:
        """A stage's key: the model's weights, the data, the settings (less those only the transfer and units
        stages read, which name them in `more`), and whatever else the stage reads. Later stages of a model read
        earlier ones, which are functions of the same key and the same code."""
        config = {k: v for k, v in self.config.describe().items() if k not in ("zoo", "layer")}
        config["effort"] = {k: v for k, v in config["effort"].items() if not k.startswith(BOUNDS_EFFORT)}
        return {"model": self.model.key, "data": self.data_id, "config": config, **more}

    def bounds_effort(self) -> dict[str, Any]:
        """The effort fields only the bounds stage reads (left out of every other stage's key)."""
        return {k: v for k, v in self.config.describe()["effort"].items() if k.startswith(BOUNDS_EFFORT)}


def attack(name: str, ctx: Ctx, x: torch.Tensor, crit: Misclassification, budgets: list[float] | None = None,
           **params: Any) -> AttackResult:
    """A registered attack on the audited model, told the data's bounds (attacks that take them)."""
    if "bounds" in ATTACKS[name].params:
        params.setdefault("bounds", ctx.config.bounds)
    return run_attack(name, ctx.target, x, crit, budgets, **params)


def supports_bounds(name: str, bounds: tuple[float, float]) -> bool:
    """Whether attack `name` can work within `bounds` (minimal-l2 is written for the box [0, 1] only)."""
    return "bounds" in ATTACKS[name].params or tuple(bounds) == (0.0, 1.0)


def quantiles(values: np.ndarray) -> dict[str, Any]:
    """n, failures (inf), median and quartiles (inf where more than that share failed), mean of the finite ones."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    v = v[~np.isnan(v)]
    finite = v[np.isfinite(v)]
    out: dict[str, Any] = {"n": int(v.size), "failed": int(v.size - finite.size)}
    if not v.size:
        return {**out, "q1": None, "median": None, "q3": None, "mean": None, "min": None, "max": None}
    method = "linear" if finite.size == v.size else "inverted_cdf"
    q = np.quantile(v, [0.25, 0.5, 0.75], method=method)
    out.update({"q1": float(q[0]), "median": float(q[1]), "q3": float(q[2]),
                "mean": float(finite.mean()) if finite.size else None,
                "min": float(finite.min()) if finite.size else None, "max": float(finite.max()) if finite.size else None})
    return out


def as_list(t: torch.Tensor, digits: int = 6) -> list[Any]:
    """A 1-D tensor as a JSON list: floats rounded to `digits` significant digits (inf/NaN as strings the report
    reads back), bools as 0/1."""
    if t.dtype == torch.bool:
        return [int(v) for v in t.tolist()]
    out: list[Any] = []
    for v in t.double().tolist():
        if math.isnan(v):
            out.append("nan")
        elif math.isinf(v):
            out.append("inf" if v > 0 else "-inf")
        else:
            out.append(float(f"{v:.{digits}g}"))
    return out


def from_list(values: list[Any]) -> np.ndarray:
    """as_list's inverse (strings "inf"/"nan" and JSON nulls back to floats)."""
    special = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan, None: math.nan}
    return np.array([special[v] if v is None or isinstance(v, str) else float(v) for v in values], dtype=np.float64)


def robust_curve(broken: torch.Tensor, valid: torch.Tensor | None = None) -> list[float]:
    """Robust accuracy per budget from broken [N, K] (True: misclassified at that budget), over valid rows."""
    b = broken if valid is None else broken[valid]
    return [float(c) for c in (~b).double().mean(dim=0).tolist()] if b.shape[0] else [math.nan] * broken.shape[1]


__all__ = ["Ctx", "attack", "supports_bounds", "quantiles", "as_list", "from_list", "robust_curve"]
