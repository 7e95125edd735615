"""Learning curves of §4.2: per-epoch clean test error, FGSM error and minimal L-BFGS distortion of a net in
training (an `on_epoch` hook of `fit` / `train_with_pool`), the verdict computed from them, and their figure."""

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
from scipy import stats
from torch import nn

from ...attacks import Misclassification, fgsm, lbfgs_attack
from ...data import ImageSet
from ...models import predict
from ...report.format import pct
from ...report.plots import save_png

CURVE_KEYS = ("test_error", "fgsm_error", "lbfgs_distortion")
CURVE_TITLES = {"test_error": "clean test error", "fgsm_error": "FGSM error (ε = {eps:g})",
                "lbfgs_distortion": "mean minimal L-BFGS distortion (RMS)"}


@dataclass
class CurveProbe:
    """`on_epoch` hook: after each `every`-th epoch (and the last), the clean error on `test`, the FGSM error at
    `eps` on `test`, and the mean minimal untargeted L-BFGS distortion over the first `n_lbfgs` test images the
    net classifies correctly then. The seconds it spends are kept apart (`seconds`), so training cost excludes
    them."""

    test: ImageSet
    epochs: int
    eps: float = 0.25
    n_lbfgs: int = 100
    lbfgs: Mapping[str, Any] = field(default_factory=lambda: {"search_steps": 2, "bracket_steps": 3,
                                                                 "max_iter": 30})
    every: int = 1
    points: dict[str, list[float]] = field(default_factory=lambda: {"epoch": [], **{k: [] for k in CURVE_KEYS}})
    seconds: float = 0.0

    def __call__(self, epoch: int, model: nn.Module) -> None:
        if epoch % self.every and epoch != self.epochs:
            return
        t0 = time.perf_counter()
        x, y = self.test.images, self.test.labels
        wrong = predict(model, x) != y
        adv = fgsm(model, x, Misclassification(y), [self.eps])
        sub = x[:self.n_lbfgs][~wrong[:self.n_lbfgs]]
        res = lbfgs_attack(model, sub, Misclassification(y[:self.n_lbfgs][~wrong[:self.n_lbfgs]]), **self.lbfgs)
        d = res.rms[res.success]
        for key, value in (("epoch", epoch), ("test_error", float(wrong.float().mean())),
                           ("fgsm_error", float(adv.error_rate()[0])),
                           ("lbfgs_distortion", float(d.mean()) if d.numel() else float("nan"))):
            self.points[key].append(value)
        self.seconds += time.perf_counter() - t0

    def record(self) -> dict[str, Any]:
        return {**self.points, "eps": self.eps, "n_lbfgs": self.n_lbfgs, "lbfgs": dict(self.lbfgs),
                "probe_seconds": round(self.seconds, 3)}


def _t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and the 95% t confidence interval over seeds (NaN bounds for fewer than two values)."""
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if v.size < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


def curve_verdict(plain: Sequence[Mapping[str, Any]], pooled: Sequence[Mapping[str, Any]],
                  key: str = "test_error") -> dict[str, Any]:
    """From per-seed curves of the plain and the pool-trained net (same seeds, same epochs): the final difference
    pool − plain (mean, 95% CI over seeds; n/a for one seed), on how many seeds the pool ends below, and the first
    epoch from which the mean pool curve stays below the mean plain one to the end (None if it never does)."""
    a = np.array([c[key] for c in plain], dtype=float)
    b = np.array([c[key] for c in pooled], dtype=float)
    diff = b - a
    mean, lo, hi = _t_interval(diff[:, -1])
    below = diff.mean(axis=0) < 0
    since = None
    for i in range(len(below) - 1, -1, -1):
        if not below[i]:
            break
        since = int(plain[0]["epoch"][i])
    return {"key": key, "seeds": int(diff.shape[0]), "final_plain": float(a[:, -1].mean()),
            "final_pool": float(b[:, -1].mean()), "final_diff": mean, "ci_low": lo, "ci_high": hi,
            "seeds_below": int((diff[:, -1] < 0).sum()), "below_since_epoch": since,
            "mean_diff_by_epoch": [float(v) for v in diff.mean(axis=0)]}


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


__all__ = ["CurveProbe", "curve_verdict", "verdict_sentence", "plot_curves", "CURVE_KEYS"]
