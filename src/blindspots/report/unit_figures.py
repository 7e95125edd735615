"""Figures 1–2 of Szegedy et al. 2014 in our data: top-k images of single units beside random directions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ..analysis.units import UnitAnalysis
from .plots import save_png


def _mosaic(images: np.ndarray, index_rows: np.ndarray, gap: int = 2) -> np.ndarray:
    """One grey image: a row of tiles per direction, white gaps between tiles."""
    n_rows, k = index_rows.shape
    h, w = images.shape[-2:]
    canvas = np.ones((n_rows * (h + gap) - gap, k * (w + gap) - gap), dtype=np.float32)
    for r in range(n_rows):
        for c in range(k):
            tile = images[index_rows[r, c]].reshape(h, w)
            canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = 1.0 - tile
    return canvas


def plot_unit_grid(images: torch.Tensor, labels: torch.Tensor, analysis: UnitAnalysis,
                   path: str | os.PathLike[str], rows: int = 8, title: str | None = None) -> Path:
    """Save a PNG: left, the top-k images of `rows` single units (Figure 1); right, of `rows` random directions
    (Figure 2). Rows are the first ones in the analysis' seeded order, not picked by hand; each row is labelled
    with its direction, its label purity and the images' true labels. Digits are drawn dark on light."""
    imgs = images.detach().cpu().numpy()
    labs = labels.cpu().numpy()
    panels = [("single units e_i (natural basis)", analysis.unit_topk, analysis.unit_purity,
               [f"e_{u}" for u in analysis.unit_ids]),
              ("random directions v", analysis.random_topk, analysis.random_purity,
               [f"v_{i}" for i in analysis.random_ids])]
    rows = min(rows, *(len(p[1]) for p in panels))
    k = analysis.k
    fig = Figure(figsize=(2 * (0.55 * k + 1.6), 0.62 * rows + 1.1))
    axes = fig.subplots(1, 2)
    for ax, (name, topk, purity, ids) in zip(axes, panels):
        ax.imshow(_mosaic(imgs, topk[:rows]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        tile = imgs.shape[-1] + 2
        ax.set_yticks([r * tile + tile / 2 - 1 for r in range(rows)])
        ax.set_yticklabels([f"{ids[r]}  {purity[r]:.2f}\n{''.join(str(labs[i]) for i in topk[r])}"
                            for r in range(rows)], fontsize=7, family="monospace")
        ax.set_xticks([])
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(name, fontsize=9)
    fig.suptitle(title or f"layer {analysis.layer}: top-{k} test images per direction "
                 "(row label: direction, label purity, true labels)", fontsize=9)
    return save_png(fig, Path(path), dpi=130)
