"""§4.2 of Szegedy et al. 2014 as resumable stages: training on a refreshed pool of adversarial examples against
weight decay alone."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from ... import __version__
from ...attacks import (
    TargetedMisclassification,
    lbfgs_attack,
    random_targets,
    save_adversarial,
)
from ...data import load_mnist
from ...data.datasets import subset_order
from ...models import error_rate, predict
from ...models.checkpoint import load_checkpoint, save_checkpoint
from ...models.train import fit
from ...report.document import Section, Table
from ...report.reference import paper_value
from ...training.pool import train_with_pool
from ..stages import StageRunner
from .common import POOL_SPEC, SectionSizes, _digest, _finite, _num, _pct, _span

# ---------------------------------------------------------------------------------------------- §4.2 pool

def adversarial_training_section(runner: StageRunner, sizes: SectionSizes, *, seed: int = 0, device: str = "cpu",
                                 progress: bool = False) -> tuple[dict[str, Any], Section]:
    """§4.2: FC100-100-10 trained with weight decay alone and with weight decay + a refreshed pool of adversarial
    examples (same recipe, seed, epochs and clean minibatches), for `sizes.pool_seeds` seeds from `seed` on;
    compared on test error (McNemar), training cost, and robustness (minimal L-BFGS distortion on the same test
    images and targets; each net's error on the other's adversarial examples)."""
    data = load_mnist("train", subset=sizes.pool_train_subset)
    test = load_mnist("test")
    runs = {str(s): _pool_pair(runner, sizes, data, test, s, device, progress)
            for s in range(seed, seed + sizes.pool_seeds)}
    first = runs[str(seed)]
    results = {"seeds": runs, "pool_config": sizes.pool.as_dict(), "pool_description": sizes.pool.describe(),
               "train_subset": sizes.pool_train_subset, "epochs": first[PLAIN]["recipe"]["epochs"],
               "recipe": first[PLAIN]["recipe"]}
    return results, pool_report(results)


PLAIN, POOLED = "weight decay", "weight decay + adversarial pool"


def _pool_pair(runner: StageRunner, sizes: SectionSizes, data: Any, test: Any, seed: int, device: str,
               progress: bool) -> dict[str, Any]:
    """Both nets of one seed (a stage each, timed there, checkpoints saved in the stage folder) and their
    evaluation (a third stage)."""
    base = {"spec": POOL_SPEC, "train_subset": sizes.pool_train_subset, "epochs": sizes.pool_epochs, "seed": seed,
            "version": __version__}

    def finish(folder: Path, model: nn.Module, extra: dict[str, Any]) -> dict[str, Any]:
        record = {"train_error": error_rate(model, data), "test_error": error_rate(model, test), **extra}
        save_checkpoint(folder / "model", model, {"spec": POOL_SPEC, **base, **record})
        return record

    def plain(folder: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        model, recipe = fit(POOL_SPEC, data, seed=seed, epochs=sizes.pool_epochs, device=device, progress=progress)
        return finish(folder, model, {"wall_time_s": time.perf_counter() - t0, "recipe": asdict(recipe)})

    def pooled(folder: Path) -> dict[str, Any]:
        run = train_with_pool(POOL_SPEC, data, config=sizes.pool, seed=seed, epochs=sizes.pool_epochs,
                              device=device, progress=progress)
        return finish(folder, run.model, {"wall_time_s": run.wall_time, "attack_seconds": run.attack_seconds,
                                          "recipe": asdict(run.recipe), "pool": run.stats})

    wd, wd_folder = runner.run(f"s4.2 train weight decay only seed {seed}", base, plain)
    adv, adv_folder = runner.run(f"s4.2 train weight decay + adversarial pool seed {seed}",
                                 {**base, "pool": sizes.pool.as_dict()}, pooled)
    wd["checkpoint"], adv["checkpoint"] = str(wd_folder / "model"), str(adv_folder / "model")  # the final folders
    models = {PLAIN: load_checkpoint(wd_folder / "model", POOL_SPEC, device)[0],
              POOLED: load_checkpoint(adv_folder / "model", POOL_SPEC, device)[0]}
    inputs = {"weights": [wd["_stage"]["inputs"], adv["_stage"]["inputs"], _digest(*_weights(models))],
              "n_robust": sizes.n_robust, "lbfgs": sizes.lbfgs, "seed": seed, "version": __version__}
    ev, _ = runner.run(f"s4.2 evaluate seed {seed}", inputs,
                       lambda folder: _evaluate_pair(folder, models, test, sizes, seed))
    return {PLAIN: wd, POOLED: adv, "evaluation": ev}


def _weights(models: Mapping[str, nn.Module]) -> list[Tensor]:
    return [p.detach() for m in models.values() for p in m.state_dict().values()]


def _evaluate_pair(folder: Path, models: Mapping[str, nn.Module], test: Any, sizes: SectionSizes,
                   seed: int) -> dict[str, Any]:
    """McNemar on the test predictions; minimal L-BFGS distortion of both nets on the same images and targets
    (the first n_robust test images of a seeded order that both classify correctly); cross-model errors."""
    (name_a, a), (name_b, b) = models.items()
    pred_a, pred_b = predict(a, test.images), predict(b, test.images)
    wrong_a, wrong_b = pred_a != test.labels, pred_b != test.labels
    only_a, only_b = int((wrong_a & ~wrong_b).sum()), int((wrong_b & ~wrong_a).sum())
    mcnemar = stats.binomtest(only_b, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    order = torch.from_numpy(subset_order(len(test), seed))
    both = (~wrong_a[order] & ~wrong_b[order]).nonzero().flatten()[:sizes.n_robust]
    chosen = order[both]
    x, y = test.images[chosen], test.labels[chosen]
    criterion = TargetedMisclassification(random_targets(y, seed=seed), y)
    attacks = {}
    for tag, (name, model) in zip(("a", "b"), models.items()):
        res = lbfgs_attack(model, x, criterion, **sizes.lbfgs)
        save_adversarial(folder / f"adversarial_{tag}.safetensors", res)
        attacks[name] = res
    ra, rb = attacks[name_a], attacks[name_b]
    ok = ra.success & rb.success
    da, db = ra.distortion[ok].double().numpy(), rb.distortion[ok].double().numpy()
    wilcoxon = stats.wilcoxon(db, da).pvalue if ok.sum() > 1 and np.any(da != db) else float("nan")

    def transfer(res: Any, model: nn.Module) -> float:
        keep = res.success
        return float((predict(model, res.x_adv[keep]) != y[keep]).float().mean()) if bool(keep.any()) else float("nan")

    per_model = {}
    for name, res in attacks.items():
        d = res.distortion[res.success].double().numpy()
        per_model[name] = {"success_rate": float(res.success.float().mean()), "mean_distortion": float(d.mean()),
                           "median_distortion": float(np.median(d)), "attack_wall_s": res.wall_time}
    return {"test_errors_only_wrong": {name_a: only_a, name_b: only_b}, "mcnemar_p": float(mcnemar),
            "n_robust": int(len(chosen)), "test_indices": chosen.tolist(), "per_model": per_model,
            "paired": {"n": int(ok.sum()), "mean_ratio": float(np.mean(db / da)),
                       "share_larger": float(np.mean(db > da)),
                       "wilcoxon_p": float(wilcoxon)},
            "transfer": {f"made for {src}": {dst: transfer(res, model) for dst, model in models.items()}
                         for src, res in attacks.items()}}


def pool_report(results: dict[str, Any]) -> Section:
    """The §4.2 Section from `adversarial_training_section`'s results."""
    runs = results["seeds"]
    paper = {PLAIN: paper_value("szegedy2014", "section4_2", "weight_decay_only_test_error"),
             POOLED: paper_value("szegedy2014", "section4_2", "adversarial_training_test_error_below")}
    rows = []
    for seed, run in runs.items():
        ev, wall = run["evaluation"], run[PLAIN]["wall_time_s"]
        for name in (PLAIN, POOLED):
            r, p = run[name], ev["per_model"][name]
            rows.append([name, seed, _pct(r["train_error"]), _pct(r["test_error"]),
                         "—" if paper[name] is None else ("< " if name == POOLED else "") + _pct(paper[name]),
                         _num(p["mean_distortion"], ".4f"), _num(p["median_distortion"], ".4f"),
                         f"{100 * p['success_rate']:.1f}%", f"{r['wall_time_s']:.1f}",
                         f"{r['wall_time_s'] / wall:.2f}×"])
    diffs = [run[POOLED]["test_error"] - run[PLAIN]["test_error"] for run in runs.values()]
    lower = sum(d < 0 for d in diffs)
    per_seed = "; ".join(
        f"seed {seed}: {_pct(run[PLAIN]['test_error'])} → {_pct(run[POOLED]['test_error'])} (McNemar p = "
        f"{run['evaluation']['mcnemar_p']:.3g} on the {sum(run['evaluation']['test_errors_only_wrong'].values())} "
        f"test images only one of the two nets gets wrong)" for seed, run in runs.items())
    significant = sum(run["evaluation"]["mcnemar_p"] < 0.05 for run in runs.values())
    ratios = [_finite(run["evaluation"]["paired"]["mean_ratio"]) for run in runs.values()]
    shares = [_finite(run["evaluation"]["paired"]["share_larger"]) for run in runs.values()]
    costs = [run[POOLED]["wall_time_s"] / run[PLAIN]["wall_time_s"] for run in runs.values()]
    attack_share = [run[POOLED]["attack_seconds"] / run[POOLED]["wall_time_s"] for run in runs.values()]
    verdict = (f"Test error with the pool is lower in {lower} of {len(runs)} seed(s); mean change "
               f"{100 * float(np.mean(diffs)):+.2f} points (pool − plain; the paper: 1.6% → below 1.2%, at least "
               f"−0.4 points). {per_seed}; the difference is significant at 0.05 for {significant} of {len(runs)} "
               f"seed(s). The adversarially trained net needs {_span(ratios, '.2f')}× the plain net's minimal L-BFGS "
               f"distortion on the same images and targets (larger on {_span([100 * v for v in shares], '.0f')}% of "
               f"them). Training cost {_span(costs, '.1f')}× the plain net's, "
               f"{100 * float(np.mean(attack_share)):.0f}% of it in the attacks.")
    first = next(iter(runs.values()))
    ev = first["evaluation"]
    table = Table(["FC100-100-10 trained with", "seed", "train err.", "test err.", "paper", "av. min. distortion",
                   "median", "attack success", "training (s)", "cost"], rows,
                  f"§4.2 — training on adversarial examples ("
                  f"{'all 60,000' if results['train_subset'] is None else results['train_subset']} training images, "
                  f"{results['epochs']} epochs; distortion: targeted L-BFGS with random targets on "
                  f"{ev['n_robust']} test images both nets of a seed classify correctly)", verdict, fmt="str")
    names = (PLAIN, POOLED)
    transfer = Table(["successful adversarial examples ↓ / fed to →", *names],
                     [[src, *(f"{100 * row[dst]:.1f}%" for dst in names)] for src, row in ev["transfer"].items()],
                     "§4.2 — error of each net on the other's minimal adversarial examples "
                     f"(seed {next(iter(runs))}; "
                     "diagonal: 100% by construction)", fmt="str")
    pool = first[POOLED]["pool"]
    layer_text = "; ".join(f"layer {k}: {v['added']} of {v['attacked']} attacks added (success "
                           f"{_num(_finite(v['success_rate']) * 100, '.0f')}%, mean RMS distortion "
                           f"{_num(v['mean_rms_distortion'], '.3f')})"
                           for k, v in pool["layers"].items())
    only_input = list(pool["layers"]) == ["input"]
    paragraphs = [
        f"Both nets share the recipe ({results['recipe']['note']}; weight decay "
        f"λ = {results['recipe']['weight_decay']:g} in (λ/2)·Σ‖W‖²), the seed, the epochs and the very same "
        "sequence of clean minibatches; the second also "
        f"trains on a pool of adversarial examples: {results['pool_description']}.",
        f"Pool over the first seed's run ({pool['refreshes']} refreshes, {pool['steps']} steps): {layer_text}. "
        + ("Only input-level examples were used here; the library also makes them for hidden sigmoid layers "
           "(PoolConfig(layers=('input', 'act1', 'act2'))), as the paper did." if only_input
           else "Hidden-layer examples train the layers above that layer only, as the paper describes."),
    ]
    return Section("§4.2 — training on adversarial examples", paragraphs, [table, transfer])
