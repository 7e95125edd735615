"""Figures of adversarial examples: Szegedy et al.'s Figure 5 layout.

Figure 5 shows, per example, the original image, the perturbation magnified around mid-grey, and the
adversarial image, with the true and the predicted label. The paper magnifies the difference by a
fixed factor of 10; by default here the factor is chosen so the largest change shown reaches black or
white (pass `magnification=10` for the paper's).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ..errors import InputError
from .plots import save_png


def _images(t: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    """[N, 1, H, W], [N, H, W] or [N, H*W] (square) as float [N, H, W]."""
    a = t.detach().cpu().float().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float32)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim == 2:
        side = int(round(a.shape[1] ** 0.5))
        if side * side != a.shape[1]:
            raise InputError(f"{name}: cannot show flat images of {a.shape[1]} pixels as a square.")
        a = a.reshape(-1, side, side)
    if a.ndim != 3:
        raise InputError(f"{name} must be grey images [N, 1, H, W], [N, H, W] or [N, H*W]; got {a.shape}.")
    return a


def _labels(t: torch.Tensor | np.ndarray | Sequence[int], n: int, name: str) -> list[int]:
    values = [int(v) for v in (t.detach().cpu().tolist() if isinstance(t, torch.Tensor) else list(t))]
    if len(values) < n:
        raise InputError(f"{name} has {len(values)} entries for {n} images.")
    return values[:n]


def examples_grid(x: torch.Tensor, x_adv: torch.Tensor, labels: torch.Tensor | Sequence[int],
                  preds: torch.Tensor | Sequence[int], path: str | Path, n: int = 10, *,
                  magnification: float | None = None, title: str | None = None) -> Path:
    """Rows of original | perturbation magnified around mid-grey | adversarial (Figure 5 layout).

    The first n pairs are shown; an empty set gives a figure that says so. Written atomically as PNG.
    """
    xs, advs = _images(x, "x"), _images(x_adv, "x_adv")
    if xs.shape != advs.shape:
        raise InputError(f"x {xs.shape} and x_adv {advs.shape} must have the same shape.")
    k = min(int(n), xs.shape[0])
    ys, ps = _labels(labels, k, "labels"), _labels(preds, k, "preds")
    diff = advs[:k] - xs[:k]
    peak = float(np.abs(diff).max()) if k else 0.0
    mag = float(magnification) if magnification is not None else (0.5 / peak if peak > 0 else 1.0)

    rows = max(k, 1)
    fig = Figure(figsize=(3 * 1.25, rows * 1.3 + 0.45), dpi=100)
    axes = fig.subplots(rows, 3, squeeze=False)
    heads = ("original", f"perturbation ×{mag:.3g}", "adversarial")
    for j, head in enumerate(heads):
        axes[0, j].set_title(head, fontsize=8)
    for i in range(rows):
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
        if i >= k:
            axes[i, 1].text(0.5, 0.5, "no examples", ha="center", va="center", fontsize=8,
                            transform=axes[i, 1].transAxes)
            continue
        axes[i, 0].imshow(xs[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 1].imshow(np.clip(0.5 + mag * diff[i], 0, 1), cmap="gray", vmin=0, vmax=1)
        axes[i, 2].imshow(advs[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_ylabel(f"label {ys[i]}", fontsize=8)
        axes[i, 2].set_ylabel(f"pred {ps[i]}", fontsize=8, color="#c0392b" if ps[i] != ys[i] else "k")
        axes[i, 2].yaxis.set_label_position("right")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, Path(path))
