"""The maxout training protocol of Goodfellow et al. (2013, 2015): train on the first rows, stop when the
validation error has not improved for `patience` epochs, then retrain from scratch on training + validation
rows for the early-stopped number of epochs. Both phases record learning curves after every epoch and save
their full state every few epochs, so a killed run resumes where it was (bit for bit, same seed)."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ...attacks import Misclassification, fgsm, lbfgs_attack
from ...data import ImageSet, load_mnist
from ...io import write_atomic, write_json_atomic
from ...models import predict
from ...models.train import Recipe, fit
from ...training.adversarial import Objective
from .config import EPSILON, TRAIN_ROWS, Net, Profile

# the curve's minimal-distortion probe: untargeted L-BFGS with a short c search (c from 1, 3 bracket and 3
# bisection steps, at most 50 L-BFGS iterations per solve); a cheap, fixed estimate, not the attack's best
LBFGS_CURVE = {"c_init": 1.0, "bracket_steps": 3, "search_steps": 3, "max_iter": 50}


def split_rows(profile: Profile) -> tuple[ImageSet, ImageSet, ImageSet]:
    """(training rows, validation rows, both): the first n_train rows of the training file and n_valid rows
    from row 50,000 on (the maxout protocol's split; the full profiles use all 60,000)."""
    full = load_mnist("train")
    order = torch.as_tensor(full.indices).argsort()

    def part(rows: Tensor, name: str) -> ImageSet:
        return ImageSet(full.images[rows], full.labels[rows], full.dataset, name, full.indices[rows.numpy()],
                        full.checksums)

    tr = order[:profile.n_train]
    va = order[TRAIN_ROWS:TRAIN_ROWS + profile.n_valid]
    both = torch.cat([tr, va])
    return (part(tr, f"train[:{profile.n_train}]"), part(va, f"train[{TRAIN_ROWS}:+{profile.n_valid}]"),
            part(both, "train+valid"))


def fgsm_error(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Share of images whose FGSM image at ε = 0.25 is misclassified (clean mistakes included)."""
    device = next(model.parameters()).device
    res = fgsm(model, x.to(device), Misclassification(y.to(device)), [EPSILON])
    return float(res.success[0].float().mean())


def lbfgs_distortion(model: nn.Module, x: Tensor, y: Tensor) -> float | None:
    """Mean RMS distortion of the minimal untargeted L-BFGS examples of the correctly classified images."""
    device = next(model.parameters()).device
    res = lbfgs_attack(model, x.to(device), Misclassification(y.to(device)), **LBFGS_CURVE)
    keep = res.success.cpu() & ~res.extras["clean_adversarial"].cpu()
    return float(res.rms.cpu()[keep].mean()) if bool(keep.any()) else None


@dataclass
class Probe:
    """What is measured after every epoch: a metric name -> function of (the model, the epoch from 1)."""

    metrics: dict[str, Callable[[nn.Module, int], float | None]]


def validation_probe(net: Net, valid: ImageSet) -> Probe:
    x, y = valid.images, valid.labels
    m: dict[str, Callable[[nn.Module, int], float | None]] = {
        "valid_error": lambda model, e: float((predict(model, x) != y).float().mean())}
    if net.stop_on == "fgsm":
        m["valid_fgsm_error"] = lambda model, e: fgsm_error(model, x, y)
    return Probe(m)


def test_probe(net: Net, profile: Profile, epochs: int) -> Probe:
    test = load_mnist("test")
    m: dict[str, Callable[[nn.Module, int], float | None]] = {
        "test_error": lambda model, e: float((predict(model, test.images) != test.labels).float().mean())}
    if net.curves == "full":
        xf, yf = test.images[:profile.n_curve_fgsm], test.labels[:profile.n_curve_fgsm]
        xl, yl = test.images[:profile.n_curve_lbfgs], test.labels[:profile.n_curve_lbfgs]
        m["fgsm_error"] = lambda model, e: fgsm_error(model, xf, yf)
        every = profile.lbfgs_every
        m["lbfgs_distortion"] = lambda model, e: lbfgs_distortion(model, xl, yl) if (
            (every and e % every == 0) or e == epochs) else None
    return Probe(m)


@dataclass
class Phase:
    """One training run with curves: `stop_metric` + `patience` enable early stopping."""

    spec: str
    data: ImageSet
    recipe: Recipe
    objective: Objective | None
    seed: int
    epochs: int
    probe: Probe
    work: Path  # where the resumable state lives (outside the stage's temp folder, which a rerun deletes)
    checkpoint_every: int
    stop_metric: str | None = None
    patience: int = 0
    curve: dict[str, list[Any]] = field(default_factory=dict)

    def best_epoch(self) -> int:
        """The epoch (from 1) of the lowest stop metric; the first of equal ones."""
        values = self.curve[self.stop_metric or ""]
        return self.curve["epoch"][min(range(len(values)), key=lambda i: (values[i], i))]

    def run(self, device: str, progress: bool) -> nn.Module:
        state, progress_file = self.work / "state.safetensors", self.work / "progress.json"
        resume = None
        if state.exists() and progress_file.exists():
            resume = load_file(str(state))
            self.curve = json.loads(progress_file.read_text(encoding="utf-8"))["curve"]
            n = int(resume["epoch"][0])
            self.curve = {k: v[:n] for k, v in self.curve.items()}
        if not self.curve:
            self.curve = {"epoch": [], "wall_s": [], **{k: [] for k in self.probe.metrics}}
        t0 = time.perf_counter() - (self.curve["wall_s"][-1] if self.curve["wall_s"] else 0.0)

        def on_epoch(epoch: int, model: nn.Module) -> bool:
            self.curve["epoch"].append(epoch)
            for name, metric in self.probe.metrics.items():
                self.curve[name].append(metric(model, epoch))
            self.curve["wall_s"].append(round(time.perf_counter() - t0, 2))
            return self.stop_metric is not None and epoch - self.best_epoch() >= self.patience

        def on_state(epoch: int, tensors: dict[str, Tensor]) -> None:
            if epoch % self.checkpoint_every == 0:
                self.work.mkdir(parents=True, exist_ok=True)
                write_atomic(state, lambda p: save_file(tensors, str(p)))
                write_json_atomic(progress_file, {"curve": self.curve})

        model, _ = fit(self.spec, self.data, seed=self.seed, epochs=self.epochs, device=device,
                       progress=progress, recipe=self.recipe, objective=self.objective, on_epoch=on_epoch,
                       resume=resume, on_state=on_state)
        shutil.rmtree(self.work, ignore_errors=True)  # finished: the stage's result replaces the saved state
        return model


def curve_summary(curve: dict[str, list[Any]]) -> dict[str, Any]:
    """The last point of every metric (the trained model's values)."""
    return {k: v[-1] for k, v in curve.items() if v and k != "epoch"} | {"epochs": len(curve.get("epoch", []))}


def finite_or_none(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v
