"""§4.2 of Szegedy et al. 2014 as resumable stages: FC100-100-10 trained with weight decay alone and with refreshed
pools of adversarial examples at the input and / or the hidden layers (an ablation over the same seeds and clean
minibatches), with learning curves per epoch and a robustness evaluation per seed.

Run sizes: `profiles.PoolSizes` (each profile's `s42`); every training is a stage, so a killed run resumes where it
stopped."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from ... import __version__
from ...attacks import TargetedMisclassification, lbfgs_attack, random_targets, save_adversarial
from ...data import ImageSet, load_mnist
from ...data.datasets import subset_order
from ...models import error_rate, predict
from ...models.checkpoint import load_checkpoint, save_checkpoint
from ...models.train import default_recipe, fit
from ...progress import Eta
from ...report.document import Section
from ...training.pool import train_with_pool
from ...stages import StageRunner
from ..curves import CURVE_KEYS, CurveProbe
from .common import ARM_TITLES, ARMS, PLAIN, POOL_SPEC, _digest, _rel
from .figures import plot_curves
from .findings import curve_verdict
from .profiles import PoolSizes
from .report import pool_report


def adversarial_training_section(runner: StageRunner, sizes: PoolSizes, *, seed: int = 0, device: str = "cpu",
                                 progress: bool = False) -> tuple[dict[str, Any], Section]:
    """§4.2: FC100-100-10 trained in every arm of `sizes.arms` (weight decay alone; + pools at the input, the hidden
    layers, or all layers) for `sizes.seeds` seeds from `seed` on, each arm on the very same clean minibatches;
    learning curves per epoch; per seed, McNemar of every arm against weight decay alone and the minimal L-BFGS
    distortion of all arms on the same images and targets. Returns (results, the report section)."""
    data = load_mnist("train", subset=sizes.train_subset)
    test = load_mnist("test")
    seeds = list(range(seed, seed + sizes.seeds))
    eta = Eta("§4.2", len(seeds) * len(sizes.arms), runner.announce, unit=" trainings")
    runs: dict[str, dict[str, Any]] = {}
    for s in seeds:
        arms = {arm: _train_arm(runner, sizes, data, test, arm, s, device, progress, eta) for arm in sizes.arms}
        models = {arm: load_checkpoint(rec["checkpoint"], POOL_SPEC, device)[0] for arm, rec in arms.items()}
        inputs = {"weights": _digest(*[p.detach() for m in models.values() for p in m.state_dict().values()]),
                  "n_robust": sizes.n_robust, "lbfgs": dict(sizes.lbfgs), "seed": s, "version": __version__}
        ev, _ = runner.run(f"s4.2 evaluate seed {s}", inputs,
                           lambda folder, m=models, s=s: _evaluate(folder, m, test, sizes, s))
        runs[str(s)] = {"arms": arms, "evaluation": ev}
    curves = {arm: [runs[str(s)]["arms"][arm]["curve"] for s in seeds] for arm in sizes.arms}
    fig_inputs = {"curves": curves, "version": __version__}
    _, fig_folder = runner.run("s4.2 learning-curve figure", fig_inputs, lambda folder: {
        "file": plot_curves({ARM_TITLES[a]: c for a, c in curves.items()}, folder / "curves.png",
                            sizes.fgsm_eps).name})
    first = runs[str(seed)]["arms"][PLAIN]
    results = {"seeds": runs, "arms": list(sizes.arms), "profile": sizes.name,
               "pool_config": sizes.pool.as_dict(), "pool_description": sizes.pool.describe(),
               "train_subset": sizes.train_subset, "epochs": first["recipe"]["epochs"], "recipe": first["recipe"],
               "curve_figure": str(_rel(runner, fig_folder / "curves.png")),
               "curve_verdicts": {arm: curve_verdict(curves[PLAIN], curves[arm]) for arm in sizes.arms
                                  if arm != PLAIN}}
    return results, pool_report(results)


def _train_arm(runner: StageRunner, sizes: PoolSizes, data: ImageSet, test: ImageSet, arm: str, seed: int,
               device: str, progress: bool, eta: Eta) -> dict[str, Any]:
    """One net of the ablation (a stage): trained with its curve probe, checkpoint saved in the stage folder.
    Wall time and attack time exclude the probe's own seconds."""
    config = replace(sizes.pool, layers=ARMS[arm]) if ARMS[arm] else None
    inputs = {"spec": POOL_SPEC, "train_subset": sizes.train_subset, "epochs": sizes.epochs, "seed": seed,
              "pool": None if config is None else config.as_dict(), "curve": {
                  "every": sizes.curve_every, "images": sizes.curve_images, "lbfgs": dict(sizes.curve_lbfgs),
                  "eps": sizes.fgsm_eps}, "version": __version__}

    def compute(folder: Path) -> dict[str, Any]:
        epochs = sizes.epochs or default_recipe(POOL_SPEC).epochs
        probe = CurveRecorder(CurveProbe(test, eps=sizes.fgsm_eps, n_lbfgs=sizes.curve_images, lbfgs=sizes.curve_lbfgs),
                              epochs=epochs, every=sizes.curve_every)
        t0 = time.perf_counter()
        if config is None:
            model, recipe = fit(POOL_SPEC, data, seed=seed, epochs=epochs, device=device, progress=progress,
                                on_epoch=probe)
            extra: dict[str, Any] = {"attack_seconds": 0.0, "pool": None}
        else:
            run = train_with_pool(POOL_SPEC, data, config=config, seed=seed, epochs=epochs, device=device,
                                  progress=progress, on_epoch=probe)
            model, recipe = run.model, run.recipe
            extra = {"attack_seconds": run.attack_seconds, "pool": run.stats}
        wall = time.perf_counter() - t0 - probe.seconds
        record = {"arm": arm, "train_error": error_rate(model, data), "test_error": error_rate(model, test),
                  "wall_time_s": wall, **extra, "recipe": asdict(recipe), "curve": probe.record()}
        save_checkpoint(folder / "model", model, {"spec": POOL_SPEC, **inputs, **record})
        return record

    name = f"s4.2 train {arm} seed {seed}"
    record, folder = runner.run(name, inputs, compute)
    eta.step(computed=runner.log[-1].status == "computed", note=f" ({name})")
    return {**record, "checkpoint": str(folder / "model")}


def _evaluate(folder: Path, models: Mapping[str, nn.Module], test: ImageSet, sizes: PoolSizes,
              seed: int) -> dict[str, Any]:
    """Per arm: McNemar against weight decay alone on the whole test set; minimal targeted L-BFGS distortion on the
    first `n_robust` test images of a seeded order that every arm classifies correctly (same random targets for
    all), paired against weight decay alone; the error of each arm on every other arm's adversarial examples."""
    preds = {arm: predict(m, test.images) for arm, m in models.items()}
    wrong = {arm: p != test.labels for arm, p in preds.items()}
    mcnemar = {}
    for arm, w in wrong.items():
        only_plain, only_arm = int((wrong[PLAIN] & ~w).sum()), int((w & ~wrong[PLAIN]).sum())
        p = stats.binomtest(only_arm, only_plain + only_arm, 0.5).pvalue if only_plain + only_arm else 1.0
        mcnemar[arm] = {"only_plain_wrong": only_plain, "only_arm_wrong": only_arm, "p": float(p)}
    order = torch.from_numpy(subset_order(len(test), seed))
    all_right = torch.stack([~w[order] for w in wrong.values()]).all(dim=0)
    chosen = order[all_right.nonzero().flatten()[:sizes.n_robust]]
    x, y = test.images[chosen], test.labels[chosen]
    criterion = TargetedMisclassification(random_targets(y, seed=seed), y)
    attacks = {}
    for arm, model in models.items():
        res = lbfgs_attack(model, x, criterion, **sizes.lbfgs)
        save_adversarial(folder / f"adversarial_{arm}.safetensors", res)
        attacks[arm] = res
    found = {arm: (res.success.cpu(), res.rms.cpu().double()) for arm, res in attacks.items()}  # any device
    base_ok, base_d = found[PLAIN]
    per_arm = {}
    for arm, res in attacks.items():
        success, distortion = found[arm]
        d = distortion[success].numpy()
        ok = success & base_ok
        da, db = base_d[ok].numpy(), distortion[ok].numpy()
        differs = ok.sum() > 1 and np.any(da != db)
        per_arm[arm] = {"mean_distortion": float(d.mean()) if d.size else float("nan"),
                        "median_distortion": float(np.median(d)) if d.size else float("nan"),
                        "success_rate": float(success.float().mean()),
                        "attack_wall_s": res.wall_time, "paired_n": int(ok.sum()),
                        "mean_ratio_to_plain": float(np.mean(db / da)) if ok.any() else float("nan"),
                        "wilcoxon_p": float(stats.wilcoxon(db, da).pvalue) if differs else float("nan"),
                        "transfer": {dst: _transfer(res, m, y) for dst, m in models.items()}}
    return {"mcnemar": mcnemar, "n_robust": int(len(chosen)), "test_indices": chosen.tolist(), "per_arm": per_arm}


def _transfer(res: Any, model: nn.Module, y: torch.Tensor) -> float:
    """Error of `model` on the successful adversarial examples of `res` (NaN when there are none)."""
    keep = res.success.cpu()
    if not bool(keep.any()):
        return float("nan")
    return float((predict(model, res.x_adv.cpu()[keep]) != y[keep]).float().mean())


@dataclass
class CurveRecorder:
    """`on_epoch` hook: after each `every`-th epoch (and the last), the three curves of `probe` (the L-BFGS
    distortion NaN where the search broke no image). The seconds it spends are kept apart (`seconds`), so
    training cost excludes them."""

    probe: CurveProbe
    epochs: int
    every: int = 1
    points: dict[str, list[float]] = field(default_factory=lambda: {"epoch": [], **{k: [] for k in CURVE_KEYS}})
    seconds: float = 0.0

    def __call__(self, epoch: int, model: nn.Module) -> None:
        if epoch % self.every and epoch != self.epochs:
            return
        t0 = time.perf_counter()
        self.points["epoch"].append(epoch)
        for key, value in self.probe.measure(model).items():
            self.points[key].append(float("nan") if value is None else value)
        self.seconds += time.perf_counter() - t0

    def record(self) -> dict[str, Any]:
        return {**self.points, "eps": self.probe.eps, "n_lbfgs": self.probe.n_lbfgs, "lbfgs": dict(self.probe.lbfgs),
                "probe_seconds": round(self.seconds, 3)}


__all__ = ["adversarial_training_section", "CurveRecorder"]
