"""Small report plots that are not attack-specific (distortion histograms)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..io import write_atomic


def save_png(fig: Figure, path: Path, **savefig: Any) -> Path:
    """Lay the figure out and write it as a PNG, atomically, creating the folder (savefig's keywords pass on)."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda p: fig.savefig(p, format="png", **savefig))


def distortion_histogram(distortions: np.ndarray, path: Path, title: str, paper: float | None = None) -> Path:
    """Histogram of per-example RMS distortions, with our mean and (if known) the paper's average."""
    fig = Figure(figsize=(4.2, 2.8), dpi=100)
    ax = fig.subplots()
    if len(distortions):
        ax.hist(distortions, bins=30, color="#4a7ab5", alpha=0.85)
        ax.axvline(float(np.mean(distortions)), color="k", lw=1.2, label=f"ours: {np.mean(distortions):.4f}")
    else:
        ax.text(0.5, 0.5, "no successful adversarial example", ha="center", va="center", transform=ax.transAxes)
    if paper is not None:
        ax.axvline(paper, color="#c0392b", lw=1.2, ls="--", label=f"paper: {paper:.3f}")
    ax.set_xlabel("RMS distortion per example")
    ax.set_ylabel("examples")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save_png(fig, path)
