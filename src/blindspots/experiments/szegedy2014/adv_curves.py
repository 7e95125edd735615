"""Learning curves of §4.2: the `on_epoch` hook of `fit` / `train_with_pool` that records the shared curves
(experiments.curves) every few epochs, the verdict's wording of their comparison, and their figure."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from torch import nn

from ...report.format import pct
from ...report.plots import save_png
from ..curves import CURVE_KEYS, CurveProbe, compare_curves

CURVE_TITLES = {"test_error": "clean test error", "fgsm_error": "FGSM error (ε = {eps:g})",
                "lbfgs_distortion": "mean minimal L-BFGS distortion (RMS)"}


@dataclass
class CurveRecorder:
    """`on_epoch` hook: after each `every`-th epoch (and the last), the three curves of `probe` (the L-BFGS
    distortion NaN where the search broke no image). The seconds it spends are kept apart (`seconds`), so
    training cost excludes them."""

    probe: CurveProbe
    epochs: int
    every: int = 1
    points: dict[str, list[float]] = field(default_factory=lambda: {"epoch": [], **{k: [] for k in CURVE_KEYS}})
    seconds: float = 0.0

    def __call__(self, epoch: int, model: nn.Module) -> None:
        if epoch % self.every and epoch != self.epochs:
            return
        t0 = time.perf_counter()
        self.points["epoch"].append(epoch)
        for key, value in self.probe.measure(model).items():
            self.points[key].append(float("nan") if value is None else value)
        self.seconds += time.perf_counter() - t0

    def record(self) -> dict[str, Any]:
        return {**self.points, "eps": self.probe.eps, "n_lbfgs": self.probe.n_lbfgs, "lbfgs": dict(self.probe.lbfgs),
                "probe_seconds": round(self.seconds, 3)}


def curve_verdict(plain: Sequence[Mapping[str, Any]], pooled: Sequence[Mapping[str, Any]],
                  key: str = "test_error") -> dict[str, Any]:
    """From per-seed curves of the plain and the pool-trained net (same seeds, same epochs): the final difference
    pool − plain (mean, 95% CI over seeds; NaN bounds for one seed), on how many seeds the pool ends below, and the
    first epoch from which the mean pool curve stays below the mean plain one to the end (None if it never does)."""
    c = compare_curves([r[key] for r in pooled], [r[key] for r in plain], plain[0]["epoch"])
    lo, hi = c.interval or (float("nan"), float("nan"))
    return {"key": key, "seeds": len(plain), "final_plain": float(np.mean(c.control_final)),
            "final_pool": float(np.mean(c.treated_final)), "final_diff": c.mean_difference, "ci_low": lo,
            "ci_high": hi, "seeds_below": c.seeds_below, "below_since_epoch": c.below_from,
            "mean_diff_by_epoch": c.mean_diff_by_epoch}


def verdict_sentence(name: str, v: Mapping[str, Any]) -> str:
    """One sentence from `curve_verdict`'s numbers (a pure function of them)."""
    ci = ("n/a with one seed" if v["ci_low"] is None or not math.isfinite(float(v["ci_low"]))
          else f"95% CI {100 * v['ci_low']:+.2f} to {100 * v['ci_high']:+.2f} points")
    ends = "ends below" if v["final_diff"] < 0 else "does not end below"
    since = ("it stays below from epoch " + str(v["below_since_epoch"]) + " on" if v["below_since_epoch"] is not None
             else "its mean curve is not below the plain one at the end")
    return (f"{name}: the pool-trained net {ends} weight decay alone in clean test error ({pct(v['final_pool'], 2)} vs "
            f"{pct(v['final_plain'], 2)}, difference {100 * v['final_diff']:+.2f} points, {ci}; lower on "
            f"{v['seeds_below']} of {v['seeds']} seed(s)); {since}.")


def plot_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, eps: float) -> Path:
    """One panel per curve quantity; one line per arm (mean over seeds, each seed faint)."""
    fig = Figure(figsize=(11, 3.2), dpi=100)
    axes = fig.subplots(1, len(CURVE_KEYS))
    colours = ["#222222", "#4a7ab5", "#c0392b", "#2e8b57", "#8e44ad", "#d68910"]
    for ax, key in zip(axes, CURVE_KEYS):
        for colour, (arm, runs) in zip(colours, curves.items()):
            ys = np.array([r[key] for r in runs], dtype=float)
            xs = runs[0]["epoch"]
            scale = 100.0 if key != "lbfgs_distortion" else 1.0
            for row in ys:
                ax.plot(xs, scale * row, color=colour, alpha=0.25, lw=0.8)
            known = np.isfinite(ys)
            mean = np.where(known.any(axis=0), np.where(known, ys, 0).sum(axis=0) / np.maximum(known.sum(axis=0), 1),
                            np.nan)
            ax.plot(xs, scale * mean, color=colour, lw=1.6, label=arm)
        ax.set_title(CURVE_TITLES[key].format(eps=eps), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("%" if key != "lbfgs_distortion" else "RMS")
        if key == "test_error":  # log scale: the last epochs' tenths of a point stay visible
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes[0].legend(fontsize=7)
    return save_png(fig, path)


__all__ = ["CurveRecorder", "curve_verdict", "verdict_sentence", "plot_curves"]
