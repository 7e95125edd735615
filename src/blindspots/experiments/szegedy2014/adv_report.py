"""The §4.2 report section, a pure function of the results `adversarial_training_section` wrote (read back from
results.json): the ablation table, the learning-curve verdicts, the transfer table, the pool counters, the figure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ...report.document import Figure, Section, Table
from ...report.format import finite, num, pct, span
from ...report.reference import paper_value
from .adv_curves import curve_verdict, verdict_sentence

# the ablation arms: the layers whose outputs get a pool of adversarial examples (none: weight decay alone)
ARMS: dict[str, tuple[str, ...]] = {"none": (), "input": ("input",), "hidden": ("act1", "act2"),
                                    "all": ("input", "act1", "act2")}
ARM_TITLES = {"none": "weight decay alone", "input": "+ pool at the input", "hidden": "+ pools at act1, act2",
              "all": "+ pools at input, act1, act2"}
PLAIN, POOLED = "none", "all"  # weight decay alone; the paper's set-up (a pool for every layer)


def _mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of the 95% t interval over seeds (NaN for fewer than two)."""
    v = np.asarray([finite(x) for x in values], dtype=float)
    if v.size < 2:
        return float(v.mean()) if v.size else float("nan"), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


def _points(v: float) -> str:
    return "n/a" if not math.isfinite(finite(v)) else f"{100 * v:+.2f}"


def pool_report(results: Mapping[str, Any]) -> Section:
    """The §4.2 Section from `adversarial_training_section`'s results (also after a JSON round trip)."""
    runs, arms = results["seeds"], results["arms"]
    paper = {PLAIN: paper_value("szegedy2014", "section4_2", "weight_decay_only_test_error"),
             POOLED: paper_value("szegedy2014", "section4_2", "adversarial_training_test_error_below")}

    def per_seed(arm: str, get: Any) -> list[float]:
        return [finite(get(run, run["arms"][arm])) for run in runs.values()]

    plain_wall = per_seed(PLAIN, lambda run, r: r["wall_time_s"])
    rows, summary = [], {}
    for arm in arms:
        err = per_seed(arm, lambda run, r: r["test_error"])
        diff = [e - p for e, p in zip(err, per_seed(PLAIN, lambda run, r: r["test_error"]))]
        d_mean, d_half = _mean_ci(diff)
        dist = per_seed(arm, lambda run, r, a=arm: run["evaluation"]["per_arm"][a]["mean_distortion"])
        ratio = per_seed(arm, lambda run, r, a=arm: run["evaluation"]["per_arm"][a]["mean_ratio_to_plain"])
        fgsm_err = per_seed(arm, lambda run, r: r["curve"]["fgsm_error"][-1])
        wall = per_seed(arm, lambda run, r: r["wall_time_s"])
        attack = per_seed(arm, lambda run, r: r["attack_seconds"])
        p_values = per_seed(arm, lambda run, r, a=arm: run["evaluation"]["mcnemar"][a]["p"])
        summary[arm] = (d_mean, d_half, p_values)
        ref = paper.get(arm)
        seeds_text = span([100 * e for e in err], ".2f") + "%" if len(err) > 1 else "—"
        rows.append([ARM_TITLES[arm], pct(float(np.mean(err)), 2), seeds_text,
                     "—" if ref is None else ("< " if arm == POOLED else "") + pct(ref, 1),
                     "—" if arm == PLAIN else (_points(d_mean) + ("" if not math.isfinite(d_half)
                                                                  else f" ± {100 * d_half:.2f}")),
                     "—" if arm == PLAIN else span(p_values, ".3g"), pct(float(np.mean(fgsm_err)), 1),
                     num(float(np.nanmean(dist)) if any(map(math.isfinite, dist)) else None, ".4f"),
                     "—" if arm == PLAIN else span(ratio, ".2f") + "×", num(float(np.mean(wall)), ".0f"),
                     f"{np.mean(wall) / np.mean(plain_wall):.1f}×",
                     "—" if arm == PLAIN else pct(float(np.sum(attack) / np.sum(wall)), 0)])
    n_seeds = len(runs)
    better = [ARM_TITLES[a] for a in arms if a != PLAIN and summary[a][0] < 0]
    sure = [ARM_TITLES[a] for a in arms if a != PLAIN and math.isfinite(summary[a][1])
            and summary[a][0] + summary[a][1] < 0]
    null = [f"{ARM_TITLES[a]} ({_points(summary[a][0])} ± {100 * summary[a][1]:.2f} points)" for a in arms
            if a != PLAIN and math.isfinite(summary[a][1]) and summary[a][0] - summary[a][1] <= 0 <= summary[a][0]
            + summary[a][1]]
    harm = [ARM_TITLES[a] for a in arms if a != PLAIN and math.isfinite(summary[a][1])
            and summary[a][0] - summary[a][1] > 0]
    verdict = (f"Over {n_seeds} seed(s), the mean test error is below weight decay alone for "
               f"{', '.join(better) if better else 'no pool arm'}"
               + (f"; the 95% CI of the difference excludes 0 for {', '.join(sure) if sure else 'none of them'}"
                  if n_seeds > 1 else " (a CI needs two seeds or more)")
               + (f"; a null result, not a harm: {'; '.join(null)}" if null else "")
               + (f"; above weight decay alone with a CI that excludes 0: {', '.join(harm)}" if harm else "")
               + ". The paper: 1.6% → below 1.2% with a pool for every layer (at least −0.4 points). "
               "McNemar p per seed compares each arm with weight decay alone on the same test images. "
               "The paper leaves the pool's method open (its size, replacement, attack budget and mixing ratio): "
               "this verdict is a result of our stated choices — " + _choices_text(results) + " — not a test "
               "of the paper's own settings.")
    table = Table(["FC100-100-10 trained with", "test err. (mean)", "per seed", "paper",
                   "Δ vs alone (points, ± 95% CI)", "McNemar p", "FGSM err. ε=0.25",
                   "min. L-BFGS distortion", "× alone (paired)", "training (s)", "cost", "in attacks"], rows,
                  f"§4.2 — ablation of the adversarial pools ({_data_text(results)}; distortion: targeted L-BFGS "
                  f"with random targets on {_n_robust(results)} test images that every arm of a seed classifies "
                  "correctly; training time under the machine's load at the time, curve probes excluded)",
                  verdict, fmt="str")
    verdicts = {arm: curve_verdict([r["arms"][PLAIN]["curve"] for r in runs.values()],
                                   [r["arms"][arm]["curve"] for r in runs.values()]) for arm in arms if arm != PLAIN}
    curve_rows = [[ARM_TITLES[arm], pct(v["final_plain"], 2), pct(v["final_pool"], 2), _points(v["final_diff"]),
                   "n/a" if not math.isfinite(finite(v["ci_low"])) else
                   f"{_points(v['ci_low'])} to {_points(v['ci_high'])}", f"{v['seeds_below']} of {v['seeds']}",
                   "never" if v["below_since_epoch"] is None else str(v["below_since_epoch"])]
                  for arm, v in verdicts.items()]
    curve_table = Table(["pool arm", "alone, last epoch", "pool, last epoch", "Δ (points)", "95% CI",
                         "seeds below", "mean curve below from epoch"], curve_rows,
                        "§4.2 — learning curves: clean test error at the last epoch, each pool arm against weight "
                        "decay alone (same seeds)", " ".join(verdict_sentence(ARM_TITLES[a], v)
                                                             for a, v in verdicts.items()), fmt="str")
    first = next(iter(runs.values()))
    transfer = Table(["adversarial examples of ↓ / fed to →", *(ARM_TITLES[a] for a in arms)],
                     [[ARM_TITLES[src], *(pct(first["evaluation"]["per_arm"][src]["transfer"][dst], 1)
                                          for dst in arms)] for src in arms],
                     f"§4.2 — error of each net on the others' minimal adversarial examples (seed {next(iter(runs))};"
                     " diagonal: 100% by construction)", fmt="str")
    paragraphs = [
        f"Every arm shares the recipe ({results['recipe']['note']}; weight decay λ = "
        f"{results['recipe']['weight_decay']:g} in (λ/2)·Σ‖W‖²), the seed, the epochs and the very same sequence of "
        f"clean minibatches; the pool arms also train on adversarial examples: {results['pool_description']} "
        "(layers per arm as named). A hidden layer's examples are its outputs pushed across the decision boundary of "
        "the layers above it, in [0, 1], and train those layers only, as the paper describes.",
        "Pools over the first seed's runs: " + "; ".join(_pool_text(ARM_TITLES[a], first["arms"][a]["pool"])
                                                        for a in arms if a != PLAIN) + ".",
        f"Learning curves: every {_every(first)} epoch(s), clean test error and FGSM error (ε = "
        f"{first['arms'][PLAIN]['curve']['eps']:g}) on all test images, and the mean minimal untargeted L-BFGS "
        f"distortion on the first {first['arms'][PLAIN]['curve']['n_lbfgs']} test images (those the net gets right)."]
    figures = [Figure(Path(results["curve_figure"]), "§4.2 learning curves: mean over seeds (bold) and each seed "
                      "(faint) of every arm")] if results.get("curve_figure") else []
    return Section("§4.2 — training on adversarial examples", paragraphs, [table, curve_table, transfer], figures)


def _choices_text(results: Mapping[str, Any]) -> str:
    """The choices behind the §4.2 verdict, from the run's own records (pool, recipe)."""
    return f"{results['pool_description']}; {results['recipe']['note']}"


def _data_text(results: Mapping[str, Any]) -> str:
    images = "all 60,000" if results["train_subset"] is None else f"{results['train_subset']:,}"
    return f"{images} training images, {results['epochs']} epochs, {len(results['seeds'])} seed(s)"


def _n_robust(results: Mapping[str, Any]) -> str:
    return span([run["evaluation"]["n_robust"] for run in results["seeds"].values()], ".0f")


def _every(run: Mapping[str, Any]) -> str:
    epochs = run["arms"][PLAIN]["curve"]["epoch"]
    return str(epochs[1] - epochs[0]) if len(epochs) > 1 else str(epochs[0])


def _pool_text(title: str, pool: Mapping[str, Any] | None) -> str:
    if not pool:
        return f"{title}: no pool"
    layers = ", ".join(f"{k} {v['added']} of {v['attacked']} attacks added (mean RMS distortion "
                       f"{num(v['mean_rms_distortion'], '.3f')})" for k, v in pool["layers"].items())
    return f"{title} ({pool['refreshes']} refreshes): {layers}"


__all__ = ["pool_report", "ARMS", "ARM_TITLES", "PLAIN", "POOLED"]
