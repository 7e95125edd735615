"""The maxout training protocol of Goodfellow et al. (2013, 2015): train on the first rows and stop when the
validation error has not improved for `patience` epochs, keeping the best model; then either continue that
best model on training + validation rows until the validation objective falls to the training objective
recorded at the best epoch (pylearn2's mnist_pi_continued.yaml, the 240-unit nets), or retrain from scratch
on training + validation rows for the best epoch's count (the paper's 1600-unit net). Both phases record
learning curves after every epoch and save their full state every few epochs, so a killed run resumes where it
was (bit for bit, same seed)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ...data import ImageSet, load_mnist
from ...io import write_atomic, write_json_atomic
from ...models.train import Recipe, fit, training_loss
from ...training.adversarial import Objective
from ..curves import CurveProbe, clean_error, fgsm_error
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


def objective_value(model: nn.Module, data: ImageSet, objective: Objective | None, spec: str, seed: int,
                    batch_size: int = 1000) -> float:
    """The training objective (J, or J̃ of an adversarial / noise objective) on `data`, with dropout as in
    training: pylearn2's train_objective / valid_objective channels. Its own random generators (seeded), so
    measuring it does not move the training run's dropout masks or minibatch order."""
    loss_fn = training_loss(spec)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    was = model.training
    model.train()
    total, n = 0.0, data.images.shape[0]
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    torch.manual_seed(seed)
    try:
        for i in range(0, n, batch_size):
            x, y = data.images[i:i + batch_size].to(device), data.labels[i:i + batch_size].to(device)
            if objective is None:
                with torch.no_grad():
                    v = loss_fn(model(x), y)
            else:
                v = objective.value(model, x, y, loss_fn, gen)
            total += float(v) * x.shape[0]
    finally:
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)
        model.train(was)
    return total / n


@dataclass
class Probe:
    """What is measured after every epoch: a metric name -> function of (the model, the epoch from 1).
    `at_end`: metrics measured only every few epochs that the final epoch must have (filled in after the run)."""

    metrics: dict[str, Callable[[nn.Module, int], float | None]]
    at_end: tuple[str, ...] = ()


def validation_probe(net: Net, valid: ImageSet, profile: Profile | None = None) -> Probe:
    """Validation error after every epoch; the adversarial validation error where the net stops on it or the
    profile asks for full curves in the early-stopping phase (then test error and test FGSM error too)."""
    x, y = valid.images, valid.labels
    m: dict[str, Callable[[nn.Module, int], float | None]] = {"valid_error": lambda model, e: clean_error(model, x, y)}
    full = profile is not None and profile.early_stop_curves and net.curves == "full"
    if net.stop_on == "fgsm" or full:
        m["valid_fgsm_error"] = lambda model, e: fgsm_error(model, x, y, EPSILON)
    if full:
        assert profile is not None
        curves = curve_probe(profile)
        m["test_error"] = lambda model, e: curves.test_error(model)
        m["fgsm_error"] = lambda model, e: curves.fgsm_error(model)
    return Probe(m)


def curve_probe(profile: Profile) -> CurveProbe:
    """The learning curves' measurements on the test set at the profile's sizes."""
    return CurveProbe(load_mnist("test"), eps=EPSILON, n_lbfgs=profile.n_curve_lbfgs, lbfgs=LBFGS_CURVE,
                      n_fgsm=profile.n_curve_fgsm)


def test_probe(net: Net, profile: Profile, epochs: int | None) -> Probe:
    """Test error (and for full curves FGSM error and minimal L-BFGS distortion) after every epoch; `epochs`
    None: the phase's length is not known in advance (it stops on a target), the final epoch is filled in."""
    curves = curve_probe(profile)
    m: dict[str, Callable[[nn.Module, int], float | None]] = {"test_error": lambda model, e: curves.test_error(model)}
    if net.curves == "full":
        m["fgsm_error"] = lambda model, e: curves.fgsm_error(model)
        every = profile.lbfgs_every
        m["lbfgs_distortion"] = lambda model, e: curves.lbfgs_distortion(model) if (
            e <= 0 or (every and e % every == 0) or e == epochs) else None
        return Probe(m, at_end=("lbfgs_distortion",))
    return Probe(m)


@dataclass
class Phase:
    """One training run with curves: `stop_metric` + `patience` enable early stopping (the best model's weights
    are kept, and with `best_objective` the training objective on those rows is recorded at each new best);
    `target` = (metric, value) stops at the first epoch whose metric is ≤ value; `init` + `offset` continue a
    model (weights, and (epochs, minibatches) of the schedules already run)."""

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
    target: tuple[str, float] | None = None
    init: dict[str, Tensor] | None = None
    offset: tuple[int, int] = (0, 0)
    best_objective: ImageSet | None = None
    curve: dict[str, list[Any]] = field(default_factory=dict)
    best: dict[str, Tensor] | None = None  # the best epoch's weights (early stopping)

    def best_epoch(self) -> int:
        """The epoch (from 1) of the lowest stop metric; the first of equal ones."""
        values = self.curve[self.stop_metric or ""]
        return self.curve["epoch"][min(range(len(values)), key=lambda i: (values[i], i))]

    def run(self, device: str, progress: bool) -> nn.Module:
        state, progress_file = self.work / "state.safetensors", self.work / "progress.json"
        resume = None
        extra = ["train_objective"] if self.best_objective is not None else []
        if state.exists() and progress_file.exists():
            resume = load_file(str(state))
            self.curve = json.loads(progress_file.read_text(encoding="utf-8"))["curve"]
            n = int(resume["epoch"][0])
            self.curve = {k: v[:n] for k, v in self.curve.items()}
            best = {k[5:]: v for k, v in resume.items() if k.startswith("best.")}
            self.best = best or None
            resume = {k: v for k, v in resume.items() if not k.startswith("best.")}
        if not self.curve:
            self.curve = {"epoch": [], "wall_s": [], **{k: [] for k in [*self.probe.metrics, *extra]}}
        t0 = time.perf_counter() - (self.curve["wall_s"][-1] if self.curve["wall_s"] else 0.0)

        def on_epoch(epoch: int, model: nn.Module) -> bool:
            self.curve["epoch"].append(epoch)
            for name, metric in self.probe.metrics.items():
                self.curve[name].append(metric(model, epoch))
            if self.stop_metric is not None:
                new_best = self.best_epoch() == epoch
                if new_best:
                    self.best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                if self.best_objective is not None:
                    self.curve["train_objective"].append(objective_value(
                        model, self.best_objective, self.objective, self.spec, self.seed) if new_best else None)
            self.curve["wall_s"].append(round(time.perf_counter() - t0, 2))
            if self.target is not None:
                name, value = self.target
                if self.curve[name][-1] is not None and self.curve[name][-1] <= value:
                    return True
            return self.stop_metric is not None and epoch - self.best_epoch() >= self.patience

        def on_state(epoch: int, tensors: dict[str, Tensor]) -> None:
            if epoch % self.checkpoint_every == 0:
                self.work.mkdir(parents=True, exist_ok=True)
                if self.best is not None:
                    tensors = tensors | {f"best.{k}": v for k, v in self.best.items()}
                write_atomic(state, lambda p: save_file(tensors, str(p)))
                write_json_atomic(progress_file, {"curve": self.curve})

        model, _ = fit(self.spec, self.data, seed=self.seed, epochs=self.epochs, device=device,
                       progress=progress, recipe=self.recipe, objective=self.objective, on_epoch=on_epoch,
                       resume=resume, on_state=on_state, init=self.init, offset=self.offset)
        last = len(self.curve["epoch"])
        for name in self.probe.at_end:  # a phase that stopped on its target: its last epoch's slow metrics
            if last and self.curve[name][-1] is None:
                self.curve[name][-1] = self.probe.metrics[name](model, 0)
        shutil.rmtree(self.work, ignore_errors=True)  # finished: the stage's result replaces the saved state
        return model


def curve_summary(curve: dict[str, list[Any]]) -> dict[str, Any]:
    """The last point of every metric (the trained model's values)."""
    return {k: v[-1] for k, v in curve.items() if v and k != "epoch"} | {"epochs": len(curve.get("epoch", []))}

