"""The run's figures, drawn on matplotlib `Figure` objects (no global backend): error vs ε, the paper's Figure 2,
FGSM examples per model, and the plain-vs-adversarial learning curves. Paths returned are relative to the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from ...attacks import load_adversarial
from ...report.plots import save_png
from ...report.reference import paper_value
from .common import EPSILON, LOGREG, LOGREG_CLASSES, LOGREG_LABEL, NETS, PAPER, predict_confidence, wide_net

CURVE_KEYS = ("maxout", "maxout_adv", "maxout_adv_wide", "maxout_sign", "maxout_uniform")


def _labels() -> dict[str, str]:
    return {n.key: n.label for n in NETS} | {LOGREG: LOGREG_LABEL, "maxout_adv_wide": wide_net(1600).label}


def error_vs_epsilon(curves: dict[str, tuple[list[float], list[float]]], path: Path) -> None:
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.subplots()
    paper = {"softmax": ("fgsm_softmax", "error"), "maxout": ("fgsm_maxout", "error"),
             "maxout_adv": ("adv_training", "fgsm_error_after"),
             "maxout_sign": ("noise_controls", "sign_noise_fgsm_error"),
             "maxout_uniform": ("noise_controls", "uniform_noise_fgsm_error"), "rbf": ("rbf", "fgsm_error"),
             LOGREG: ("logreg_3v7", "fgsm_error")}
    labels = _labels()
    for i, (key, (eps, err)) in enumerate(curves.items()):
        color = f"C{i}"
        ax.plot(eps, [100 * e for e in err], ("-", "--", ":", "-.")[i % 4], marker="os^vD<>"[i % 7], ms=3,
                color=color, label=labels.get(key, key))
        value = paper_value(PAPER, *paper[key]) if key in paper else None
        if value is not None:
            ax.plot([EPSILON], [100 * value], "x", ms=8, mew=2, color=color)
    ax.axvline(EPSILON, color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("ε (L∞ budget per pixel)")
    ax.set_ylabel("error on FGSM images (%)")
    ax.set_title("FGSM error vs ε (lines: ours; ×: the paper at ε = 0.25)", fontsize=10)
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=7, loc="lower right")
    save_png(fig, path)


def logreg_figure(w: Tensor, t: dict[str, Tensor], path: Path) -> None:
    """The paper's Figure 2: weights, their sign, clean 3s and 7s, and their FGSM images at ε = 0.25."""
    x, x_adv, y, pred = t["x"], t["x_adv"][0], t["label"], t["pred"][0]
    pick = torch.cat([torch.nonzero(y == 0).flatten()[:8], torch.nonzero(y == 1).flatten()[:8]])
    fig = Figure(figsize=(11, 3.2), dpi=100)
    axes = fig.subplots(1, 4)
    lim = float(w.abs().max())
    axes[0].imshow(w.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[0].set_title("(a) weights w (red > 0: votes 7)", fontsize=9)
    axes[1].imshow(w.sign().numpy(), cmap="gray", vmin=-1, vmax=1)
    axes[1].set_title("(b) sign(w)", fontsize=9)

    def grid(images: Tensor) -> np.ndarray:
        return torch.cat([torch.cat(list(images[r * 4:(r + 1) * 4, 0]), dim=1) for r in range(4)], dim=0).numpy()

    axes[2].imshow(grid(x[pick]), cmap="gray", vmin=0, vmax=1)
    axes[2].set_title("(c) test 3s and 7s", fontsize=9)
    axes[3].imshow(grid(x_adv[pick]), cmap="gray", vmin=0, vmax=1)
    wrong = int((pred[pick] != y[pick]).sum())
    axes[3].set_title(f"(d) FGSM, ε = 0.25: {wrong}/{len(pick)} misclassified", fontsize=9)
    for r in range(4):
        for c in range(4):
            i = pick[r * 4 + c]
            axes[3].text(c * 28 + 1, r * 28 + 7, str(LOGREG_CLASSES[int(pred[i])]), color="#e33", fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    save_png(fig, path)


def examples(t: dict[str, Tensor], model: nn.Module, independent: bool, out: Path, label: str) -> None:
    """Eight clean test images and their FGSM images at ε = 0.25, with prediction and confidence."""
    x, x_adv, y = t["x"][:8], t["x_adv"][0][:8], t["label"][:8]
    pred_c, conf_c, _ = predict_confidence(model, x, independent)
    pred, conf, _ = predict_confidence(model, x_adv, independent)
    fig = Figure(figsize=(10, 3.0), dpi=100)
    axes = fig.subplots(2, 8)
    for j in range(x.shape[0]):
        for row, (img, p, c) in enumerate(((x[j], pred_c[j], conf_c[j]), (x_adv[j], pred[j], conf[j]))):
            ax = axes[row, j]
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{int(p)} ({100 * float(c):.0f}%)", fontsize=8, color="k" if int(p) == int(y[j]) else "#c0392b")
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("clean", fontsize=8)
    axes[1, 0].set_ylabel("ε = 0.25", fontsize=8)
    fig.suptitle(f"{label}: prediction (confidence); red = wrong", fontsize=9)
    save_png(fig, out)


def learning_curves(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Every seed, both phases on one epoch axis: clean test error (all protocol nets), FGSM error and mean
    minimal L-BFGS distortion (plain and adversarial nets) — the early-stopping phase where the profile measured
    them (thin), the second phase after it (thick; a continuation starts at the best epoch, a retrain at 0) —
    and the early-stopping phase's validation criteria (clean, and FGSM where measured)."""
    fig = Figure(figsize=(12, 7.5), dpi=100)
    axes = fig.subplots(2, 2).flatten()
    labels = _labels()
    panels = (("test_error", "clean test error (%)", 100), ("fgsm_error", "FGSM error, ε = 0.25 (%)", 100),
              ("lbfgs_distortion", "mean minimal L-BFGS RMS distortion", 1))

    def points(c: dict[str, Any], metric: str, scale: float, start: int = 0) -> tuple[list[int], list[float]]:
        """The epochs where `metric` was probed and its values (curves probed every few epochs skip the rest)."""
        kept = [(start + e, scale * v) for e, v in zip(c["epoch"], c[metric]) if v is not None]
        return [e for e, _ in kept], [v for _, v in kept]

    for i, key in enumerate(k for k in CURVE_KEYS if k in runs):
        for j, r in enumerate(runs[key]):
            c, es = r["curve"], r["early_stop"]
            best = es["best_epoch"]
            start = best if r.get("second_phase", "continue") == "continue" and "valid_objective" in c else 0
            alpha = 0.9 if j == 0 else 0.5
            for ax, (metric, _, scale) in zip(axes, panels):
                if metric in es["curve"]:
                    ax.plot(*points(es["curve"], metric, scale), color=f"C{i}", lw=0.7,
                            alpha=alpha * 0.7)
                if metric in c:
                    ax.plot(*points(c, metric, scale, start), color=f"C{i}", lw=1.6,
                            marker=".", ms=3, alpha=alpha, label=labels[key] if j == 0 else None)
                ax.axvline(best, color=f"C{i}", lw=0.6, ls=":")
            for metric, style in (("valid_error", "-"), ("valid_fgsm_error", "--")):
                if metric in es["curve"] and (metric == es["stop_metric"] or "test_error" in es["curve"]):
                    axes[3].plot(*points(es["curve"], metric, 100), color=f"C{i}", lw=1,
                                 ls=style, alpha=alpha,
                                 label=f"{labels[key]} ({'clean' if metric == 'valid_error' else 'FGSM'})"
                                 if j == 0 else None)
            axes[3].axvline(best, color=f"C{i}", lw=0.6, ls=":")
    for ax, (_, ylabel, _) in zip(axes, panels):
        ax.set_xlabel("epoch (thin: early stopping; thick: second phase; dotted: best)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    axes[3].set_yscale("log")
    axes[3].set_xlabel("early-stopping epoch (dotted: best)")
    axes[3].set_ylabel("validation error (%): clean —, FGSM --")
    axes[3].legend(fontsize=7)
    fig.suptitle("Learning curves (every seed; the first one darker)", fontsize=10)
    save_png(fig, path)


def draw_all(out: Path, attacks: dict[str, tuple[dict[str, Any], Path]], logreg: nn.Module,
             runs: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """Every figure of the run; returns name -> path relative to `out`."""
    error_vs_epsilon({k: (v[0]["epsilons"], v[0]["error"]) for k, v in attacks.items()},
                     out / "figures" / "error_vs_epsilon.png")
    t = load_adversarial(attacks[LOGREG][1] / "fgsm_eps0.25.safetensors")
    logreg_figure(logreg.linear.weight.detach().cpu().view(28, 28), t, out / "figures" / "logreg_figure2.png")
    learning_curves({k: v for k, v in runs.items() if "early_stop" in v[0]}, out / "figures" / "learning_curves.png")
    paths = {"curves": "figures/error_vs_epsilon.png", "logreg": "figures/logreg_figure2.png",
             "learning_curves": "figures/learning_curves.png"}
    for k, (_, folder) in attacks.items():
        if k != LOGREG:
            paths[f"examples {k}"] = str((folder / "examples.png").relative_to(out))
    return paths
