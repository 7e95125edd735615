"""Small report plots that are not attack-specific (distortion histograms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..io import write_atomic


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
    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, format="png"))
    return path
