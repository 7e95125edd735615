"""How numbers are written in every report: one formatter for percentages, plain numbers, ranges and ± pairs.

A missing value (None, NaN or infinity, e.g. a strict-JSON null read back from results.json) is written "n/a"."""

from __future__ import annotations

import math
from collections.abc import Iterable

MISSING = "n/a"


def finite(v: float | None) -> float:
    """v as a float, NaN for None: the value the formatters below write as "n/a"."""
    return float("nan") if v is None else float(v)


def pct(v: float | None, digits: int = 1) -> str:
    """A rate in [0, 1] as a percentage: 0.0123 -> "1.2%"."""
    v = finite(v)
    return MISSING if not math.isfinite(v) else f"{100 * v:.{digits}f}%"


def num(v: float | None, spec: str = ".4f") -> str:
    """A number in `format` spec `spec`."""
    v = finite(v)
    return MISSING if not math.isfinite(v) else format(v, spec)


def span(values: Iterable[float | None], spec: str) -> str:
    """"a" or "a–b": the range of per-seed values ("n/a" where none is a number)."""
    known = [v for v in map(finite, values) if math.isfinite(v)]
    if not known:
        return MISSING
    lo, hi = format(min(known), spec), format(max(known), spec)
    return lo if lo == hi else f"{lo}–{hi}"


def plus_minus(mean: float | None, spread: float | None, spec: str = ".3f") -> str:
    """"m ± s" (e.g. a mean over seeds and its standard deviation or half-width of a confidence interval)."""
    return f"{num(mean, spec)} ± {num(spread, spec)}"


__all__ = ["MISSING", "finite", "pct", "num", "span", "plus_minus"]
