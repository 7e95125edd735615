"""Every plot of `reproduce szegedy2014` drawn in this package: the §4.2 learning curves (drawn by the stage "s4.2
learning-curve figure", whose result the figure is). Tables 1-3 and §3 draw theirs with blindspots.report
(figures, plots, unit_figures)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ...report.plots import save_png
from ..curves import CURVE_KEYS


CURVE_TITLES = {"test_error": "clean test error", "fgsm_error": "FGSM error (ε = {eps:g})",
                "lbfgs_distortion": "mean minimal L-BFGS distortion (RMS)"}


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


__all__ = ["CURVE_TITLES", "plot_curves"]
