"""§4.2 of Szegedy et al. 2014 as resumable stages: FC100-100-10 trained with weight decay alone and with refreshed
pools of adversarial examples at the input and / or the hidden layers (an ablation over the same seeds and clean
minibatches), with learning curves per epoch and a robustness evaluation per seed.

Run sizes are this module's own (`PoolSizes`, presets in `POOL_SIZES` by profile name: "quick", "standard",
"paper"; "full" runs as "standard"); every training is a stage, so a killed run resumes where it stopped."""

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
from ...errors import SpecError
from ...models import error_rate, predict
from ...models.checkpoint import load_checkpoint, save_checkpoint
from ...models.train import default_recipe, fit
from ...progress import Eta
from ...report.document import Section
from ...training.pool import PoolConfig, train_with_pool
from ...stages import StageRunner
from ..curves import CurveProbe
from .adv_curves import CurveRecorder, curve_verdict, plot_curves
from .adv_report import ARM_TITLES, ARMS, PLAIN, POOLED, pool_report
from .common import POOL_SPEC, _digest, _rel

# The pool recipe of every arm (its layers are the arm's), chosen on a validation split (FC100-100-10 trained on the
# first 10,000 training images for 20 epochs, measured on the last 10,000; never on the test set). Validation error,
# weight decay alone 4.40% (seed 0) / 4.24% (seed 1): input pool with 0.1 pool examples per clean one 4.07% / 3.92%;
# 0.05: 3.89% (seed 0 only; measured after the profile runs had started); 0.25 (the former default) raised it
# (20,000 images: 3.50% vs 3.12%); hidden-layer pools raised it at every setting tried (act1+act2 0.25: 6.13%, 0.1:
# 5.31%, from mid-training on: 5.52%; all layers 0.1: 5.11%, from mid-training on: 6.18%). README: §4.2 notes.
DEFAULT_POOL = PoolConfig()


@dataclass(frozen=True)
class PoolSizes:
    """How big §4.2 runs: training images and epochs of every net (None: all 60,000 / the FC recipe's 40), seeds
    (seed, seed + 1, ...), the ablation arms (keys of ARMS), the pool recipe, the final robustness evaluation
    (`n_robust` test images, L-BFGS options `lbfgs`) and the learning curves (every `curve_every` epochs:
    clean and FGSM error on the test set, minimal untargeted L-BFGS distortion on `curve_images` test images)."""

    name: str
    train_subset: int | None
    epochs: int | None
    seeds: int = 1
    arms: tuple[str, ...] = tuple(ARMS)
    pool: PoolConfig = DEFAULT_POOL
    n_robust: int = 300
    lbfgs: Mapping[str, Any] = field(default_factory=lambda: {"search_steps": 6})
    curve_every: int = 1
    curve_images: int = 100
    curve_lbfgs: Mapping[str, Any] = field(default_factory=lambda: {"search_steps": 2, "bracket_steps": 3,
                                                                     "max_iter": 30})
    fgsm_eps: float = 0.25

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or PLAIN not in self.arms or len(self.arms) < 2:
            raise SpecError(f"arms must include {PLAIN!r} and at least one pool arm out of {', '.join(ARMS)}; "
                            f"got {self.arms!r}.")
        if self.seeds < 1 or self.curve_every < 1:
            raise SpecError(f"seeds and curve_every must be positive, got {self.seeds} and {self.curve_every}.")


POOL_SIZES: dict[str, PoolSizes] = {
    # CI: one seed, weight decay alone vs all layers' pools on 5,000 images, curves every 5 epochs
    "quick": PoolSizes("quick", train_subset=5000, epochs=10, seeds=1, arms=(PLAIN, POOLED), n_robust=50,
                       lbfgs={"search_steps": 4, "max_iter": 50}, curve_every=5, curve_images=30),
    # the whole ablation on 20,000 images for 20 epochs, two seeds, curves every 2 epochs
    "standard": PoolSizes("standard", train_subset=20_000, epochs=20, seeds=2, n_robust=200, curve_every=2,
                          curve_images=50),
    # the paper's set-up: all 60,000 images, the FC recipe's 40 epochs, the whole ablation, three seeds
    "paper": PoolSizes("paper", train_subset=None, epochs=None, seeds=3, n_robust=500, curve_every=2),
}


def pool_sizes(profile: str) -> PoolSizes:
    """The §4.2 preset of a `reproduce` profile ("full" runs as "standard")."""
    key = "standard" if profile == "full" else profile
    if key not in POOL_SIZES:
        raise SpecError(f"no §4.2 preset for profile {profile!r}; choose one of {', '.join(POOL_SIZES)} or 'full'.")
    return POOL_SIZES[key]


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


__all__ = ["PoolSizes", "POOL_SIZES", "pool_sizes", "adversarial_training_section", "pool_report", "ARMS", "PLAIN",
           "POOLED", "DEFAULT_POOL"]
