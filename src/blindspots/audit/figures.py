"""The audit's figures, drawn from results.json alone: minimal-perturbation histograms, robust-accuracy curves, and\nper image the certified radius, the exact minimum and the best attack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..io import safe_name
from ..report.plots import save_png
from .common import from_list

NORMS = (("minimal_l2", "L2"), ("minimal_linf", "L∞"))


def figure_paths(name: str) -> dict[str, Path]:
    """Where a model's figures go, relative to the report folder."""
    return {"minimal": Path("figures") / f"{safe_name(name)}-minimal.png",
            "curves": Path("figures") / f"{safe_name(name)}-curves.png",
            "bounds": Path("figures") / f"{safe_name(name)}-bounds.png"}


def minimal_histograms(name: str, m: dict[str, Any], path: Path) -> None:
    """Per-image minimal L2 and L∞ (each attack and the per-image best) over correctly classified images."""
    fig = Figure(figsize=(8.4, 3.0), dpi=100)
    for ax, (key, label) in zip(fig.subplots(1, 2), NORMS):
        rec = m[key]
        best = from_list(rec["best"]["sizes"])
        best = best[np.isfinite(best) & (best > 0)]
        bins = np.linspace(0, float(best.max()) * 1.05, 31) if best.size else np.linspace(0, 1, 31)
        for attack, a in rec["attacks"].items():
            v = from_list(a["sizes"])
            v = v[np.isfinite(v) & (v > 0)]
            if v.size:
                ax.hist(np.minimum(v, bins[-1]), bins=bins, histtype="step", lw=1.2, label=f"{attack} ({v.size})")
        if best.size:
            ax.hist(best, bins=bins, color="#4a7ab5", alpha=0.35, label=f"per-image best ({best.size})")
            ax.axvline(float(np.median(best)), color="k", lw=1, ls="--", label=f"median {np.median(best):.3g}")
        else:
            ax.text(0.5, 0.5, "no adversarial example found", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(f"minimal {label} perturbation")
        ax.set_ylabel("images")
        if best.size:  # else nothing is drawn (e.g. no minimal attack could run): no legend
            ax.legend(fontsize=7)
    fig.suptitle(f"{name}: smallest adversarial perturbation per image", fontsize=10)
    save_png(fig, path, metadata={"Software": None})


def robust_curves(name: str, m: dict[str, Any], path: Path) -> None:
    """Robust accuracy against ε, L∞ and L2: one line per attack and the envelope."""
    fig = Figure(figsize=(8.4, 3.0), dpi=100)
    for ax, norm, label in zip(fig.subplots(1, 2), ("linf", "l2"), ("L∞", "L2")):
        c = m["curves"][norm]
        v = m["verdict"][norm]  # a random model: every line an expectation over the draws, as the verdict
        lines = {**(v["lines"] if "draws" in v else c["lines"]), "every attack (verdict)": v["robust"]}
        for line, values in lines.items():
            v = [np.nan if x is None else x for x in values]
            style = {"color": "k", "lw": 2} if line == "every attack (verdict)" else {"lw": 1.2}
            ax.plot(c["eps"], v, marker="o", ms=3, label=line, **style)
        ax.set_xlabel(f"{label} budget ε")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{name}: accuracy under attack", fontsize=10)
    save_png(fig, path, metadata={"Software": None})


def bounds_per_image(name: str, exact: dict[str, Any], path: Path) -> None:
    """Per image of the first K (sorted by the best attack): certified L∞ radius ≤ exact minimum ≤ best attack; the
    solver's proven interval where it stopped at the time limit."""
    fig = Figure(figsize=(8.4, 3.2), dpi=100)
    ax = fig.subplots()
    best, radius = from_list(exact["best_attack"]), from_list(exact["radius"])
    value, lower, upper = from_list(exact["value"]), from_list(exact["lower"]), from_list(exact["upper"])
    keep = np.flatnonzero(np.isfinite(best) & (from_list(exact["correct"]) > 0))
    order = keep[np.argsort(best[keep], kind="stable")]
    pos = np.arange(order.size)
    ax.plot(pos, best[order], "v", color="#c44e52", label="best attack (audit)")
    ax.plot(pos, radius[order], "^", color="#4c72b0", label="certified radius")
    proven = np.isfinite(value[order])
    ax.plot(pos[proven], value[order][proven], "o", mfc="none", color="k", label="exact minimum (MILP)")
    bracket = ~proven & np.isfinite(lower[order]) & np.isfinite(upper[order])
    if bracket.any():
        ax.vlines(pos[bracket], lower[order][bracket], upper[order][bracket], color="0.5",
                  label="proven interval (time limit)")
    ax.set_xlabel(f"image (first {exact['images']}, correctly classified, by best attack)")
    ax.set_ylabel("L∞ distance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(f"{name}: certified radius ≤ exact minimal L∞ ≤ best attack, per image", fontsize=10)
    save_png(fig, path, metadata={"Software": None})


def draw_figures(results: dict[str, Any], out: Path) -> None:
    for name, m in results["per_model"].items():
        paths = figure_paths(name)
        minimal_histograms(name, m, out / paths["minimal"])
        robust_curves(name, m, out / paths["curves"])
        if m.get("bounds", {}).get("supported"):
            bounds_per_image(name, m["bounds"]["exact"], out / paths["bounds"])


__all__ = ["draw_figures", "figure_paths"]
