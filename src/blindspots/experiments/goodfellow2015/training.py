"""The maxout training protocol of Goodfellow et al. (2013, 2015): train on the first rows and stop when the
validation error has not improved for `patience` epochs, keeping the best model; then either continue that
best model on training + validation rows until the validation objective falls to the training objective
recorded at the best epoch (pylearn2's mnist_pi_continued.yaml, the 240-unit nets), or retrain from scratch
on training + validation rows for the best epoch's count (the paper's 1600-unit net). Both phases record
learning curves after every epoch and save their full state every few epochs, so a killed run resumes where it
was (bit for bit, same seed).

`TrainingStages`, mixed into the experiment, runs the protocol as stages (one per phase and seed) and trains the
shallow softmax and the RBF net through the model store."""

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

from ... import __version__
from ...data import ImageSet, load_mnist
from ...errors import CheckpointError
from ...io import file_digest, write_atomic, write_json_atomic
from ...attacks import Misclassification, fgsm
from ...models import build_model, error_rate, predict, train
from ...models.train import Recipe, fit, recipe_dict, training_loss
from ...training.adversarial import Objective
from ..curves import CurveProbe, clean_error, fgsm_error, mcnemar
from .common import EPSILON, Net, Stages, protocol_recipe
from .profiles import TRAIN_ROWS, Profile

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


def every(n: int, metric: Callable[[nn.Module], float | None], last: int | None = None
          ) -> Callable[[nn.Module, int], float | None]:
    """`metric` measured at epochs 0, n, 2n, … and at epoch `last` (None elsewhere): the curves of long runs are
    probed every few epochs (a `Probe.at_end` metric then gets the run's final epoch filled in)."""
    return lambda model, e: metric(model) if n <= 1 or e <= 0 or e % n == 0 or e == last else None


def validation_probe(net: Net, valid: ImageSet, profile: Profile | None = None) -> Probe:
    """Validation error after every epoch; the adversarial validation error where the net stops on it (every
    epoch) or the profile asks for full curves in the early-stopping phase (then test error and test FGSM error
    too, every `profile.curve_every` epochs)."""
    x, y = valid.images, valid.labels
    m: dict[str, Callable[[nn.Module, int], float | None]] = {"valid_error": lambda model, e: clean_error(model, x, y)}
    full = profile is not None and profile.early_stop_curves and net.curves == "full"
    n = profile.curve_every if profile is not None else 1
    if net.stop_on == "fgsm" or full:
        m["valid_fgsm_error"] = every(1 if net.stop_on == "fgsm" else n,
                                      lambda model: fgsm_error(model, x, y, EPSILON))
    if full:
        assert profile is not None
        curves = curve_probe(profile)
        m["test_error"] = every(n, curves.test_error)
        m["fgsm_error"] = every(n, curves.fgsm_error)
    return Probe(m)


def curve_probe(profile: Profile) -> CurveProbe:
    """The learning curves' measurements on the test set at the profile's sizes."""
    return CurveProbe(load_mnist("test"), eps=EPSILON, n_lbfgs=profile.n_curve_lbfgs, lbfgs=LBFGS_CURVE,
                      n_fgsm=profile.n_curve_fgsm)


def test_probe(net: Net, profile: Profile, epochs: int | None) -> Probe:
    """Test error (and for full curves FGSM error and minimal L-BFGS distortion) every `profile.curve_every`
    epochs (L-BFGS every `lbfgs_every`); `epochs` None: the phase's length is not known in advance (it stops on a
    target), the final epoch is filled in."""
    curves = curve_probe(profile)
    n = profile.curve_every
    m: dict[str, Callable[[nn.Module, int], float | None]] = {"test_error": every(n, curves.test_error, epochs)}
    at_end = ("test_error",)
    if net.curves == "full":
        m["fgsm_error"] = every(n, curves.fgsm_error, epochs)
        lb = profile.lbfgs_every
        m["lbfgs_distortion"] = lambda model, e: curves.lbfgs_distortion(model) if (
            e <= 0 or (lb and e % lb == 0) or e == epochs) else None
        at_end = ("test_error", "fgsm_error", "lbfgs_distortion")
    return Probe(m, at_end=at_end)


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
    freeze_momentum: bool = False  # a continuation: momentum held at the offset epoch's value (see models.train)
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
                       resume=resume, on_state=on_state, init=self.init, offset=self.offset,
                       freeze_momentum=self.freeze_momentum)
        last = len(self.curve["epoch"])
        for name in self.probe.at_end:  # a phase that stopped on its target: its last epoch's slow metrics
            if last and self.curve[name][-1] is None:
                self.curve[name][-1] = self.probe.metrics[name](model, 0)
        shutil.rmtree(self.work, ignore_errors=True)  # finished: the stage's result replaces the saved state
        return model


def test_predictions(model: nn.Module) -> tuple[Tensor, Tensor]:
    """The model's label for every test image, clean and under FGSM at ε = EPSILON (uint8, test-file order): the
    per-image evidence behind a paired test (McNemar) between two arms of one seed."""
    test = load_mnist("test")
    device = next(model.parameters()).device
    res = fgsm(model, test.images.to(device), Misclassification(test.labels.to(device)), [EPSILON])
    return predict(model, test.images).to(torch.uint8), res.pred[0].cpu().to(torch.uint8)


def paired_tests(runs: dict[str, list[dict[str, Any]]], pairs: tuple[tuple[str, str], ...]
                 ) -> dict[str, dict[str, dict[str, Any]]]:
    """McNemar per seed between each (treated, control) pair of protocol nets, on the clean and the FGSM test
    predictions their second-phase stages saved ({treated: {seed: {"clean": …, "fgsm": …}}}); seeds whose stages
    saved no predictions (made by older code) are left out."""
    labels = load_mnist("test").labels.to(torch.uint8)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for treated, control in pairs:
        by_seed = {r["seed"]: r for r in runs.get(control, []) if "predictions_sha256" in r}
        for r in runs.get(treated, []):
            c = by_seed.get(r["seed"])
            if c is None or "predictions_sha256" not in r:
                continue
            a, b = _predictions(r), _predictions(c)
            out.setdefault(treated, {})[str(r["seed"])] = {
                kind: mcnemar(b[kind] != labels, a[kind] != labels) for kind in ("clean", "fgsm")}
    return out


def _predictions(run: dict[str, Any]) -> dict[str, Tensor]:
    """A second-phase stage's saved test predictions, checked against the hash the stage recorded."""
    path = Path(run["checkpoint"]).parent / "predictions.safetensors"
    if file_digest(path, "sha256") != run["predictions_sha256"]:
        raise CheckpointError(f"{path} does not match the hash its stage recorded; delete {path.parent}.")
    return load_file(str(path))


def curve_summary(curve: dict[str, list[Any]]) -> dict[str, Any]:
    """The last point of every metric (the trained model's values)."""
    return {k: v[-1] for k, v in curve.items() if v and k != "epoch"} | {"epochs": len(curve.get("epoch", []))}


class TrainingStages(Stages):
    """The training stages, mixed into the experiment: the maxout nets by the protocol (one stage per phase and
    seed), the shallow softmax and the RBF net through the model store."""

    def _seeds(self, net: Net) -> list[int]:
        return list(range(self.seed, self.seed + self.profile.seeds)) if net.compare else [self.seed]

    def _protocol_stages(self, net: Net, seed: int) -> dict[str, Any]:
        """Early stopping on the validation rows (keeping the best model), then the second phase on training +
        validation rows: continue the best model until the validation objective falls to the training objective
        of the best epoch (net.second_phase "continue"), or retrain from scratch for the best epoch's count."""
        p = self.profile
        recipe = protocol_recipe(net.spec, p.max_epochs)
        base = {"spec": net.spec, "objective": None if net.objective is None else net.objective.as_dict(),
                "seed": seed, "recipe": recipe_dict(recipe), "n_train": p.n_train, "n_valid": p.n_valid,
                "version": __version__}
        continues = net.second_phase == "continue"
        if p.curve_every != 1:
            base["curve_every"] = p.curve_every
        es_inputs = base | {"phase": "early stopping", "patience": p.patience, "stop_on": net.stop_on}
        if continues or p.early_stop_curves:
            es_inputs |= {"keep_best": continues, "early_stop_curves": p.early_stop_curves,
                          "n_curve_fgsm": p.n_curve_fgsm}
        train_rows, valid_rows, both = split_rows(p)
        stop_metric = "valid_fgsm_error" if net.stop_on == "fgsm" else "valid_error"

        def early_stop(folder: Path) -> dict[str, Any]:
            phase = Phase(net.spec, train_rows, recipe, net.objective, seed, p.max_epochs,
                          validation_probe(net, valid_rows, p), self._work(f"early-stop {net.key} s{seed}", es_inputs),
                          p.checkpoint_every, stop_metric, p.patience,
                          best_objective=train_rows if continues else None)
            phase.run(self.device, self.progress)
            best = phase.best_epoch()
            out = {"curve": phase.curve, "best_epoch": best, "stop_metric": stop_metric,
                   "best_value": phase.curve[stop_metric][best - 1]}
            if continues:
                assert phase.best is not None
                weights = folder / "best.safetensors"
                write_atomic(weights, lambda f: save_file({k: v.contiguous() for k, v in phase.best.items()},
                                                          str(f)))
                out |= {"best_weights_sha256": file_digest(weights, "sha256"),
                        "train_objective_at_best": phase.curve["train_objective"][best - 1],
                        "batches_per_epoch": -(-len(train_rows) // recipe.batch_size)}
            return out

        es, es_folder = self.runner.run(f"early-stop {net.key} s{seed}", es_inputs, early_stop)
        best_epoch = int(es["best_epoch"])
        phase2 = {"phase": "continue" if continues else "retrain", "curves": net.curves,
                  "n_curve_fgsm": p.n_curve_fgsm, "n_curve_lbfgs": p.n_curve_lbfgs, "lbfgs_every": p.lbfgs_every}
        if continues:
            phase2 |= {"from": es["best_weights_sha256"], "target": es["train_objective_at_best"],
                       "best_epoch": best_epoch}
        else:
            phase2 |= {"epochs": best_epoch}
        if continues:
            phase2["momentum"] = "frozen at the best epoch's"
        rt_inputs = base | phase2

        def second_phase(folder: Path) -> dict[str, Any]:
            t0 = time.perf_counter()
            work = self._work(f"train {net.key} s{seed}", rt_inputs)
            if continues:
                path = es_folder / "best.safetensors"
                if file_digest(path, "sha256") != es["best_weights_sha256"]:
                    raise CheckpointError(f"{path} does not match the hash its stage recorded; delete {es_folder}.")
                probe = test_probe(net, p, None)
                valid_obj = "valid_objective"
                probe.metrics[valid_obj] = lambda model, e: objective_value(model, valid_rows, net.objective,
                                                                             net.spec, seed)
                phase = Phase(net.spec, both, recipe, net.objective, seed, p.max_epochs, probe, work,
                              p.checkpoint_every, target=(valid_obj, float(es["train_objective_at_best"])),
                              init=load_file(str(path)),
                              offset=(best_epoch, best_epoch * int(es["batches_per_epoch"])), freeze_momentum=True)
            else:
                phase = Phase(net.spec, both, recipe, net.objective, seed, best_epoch,
                              test_probe(net, p, best_epoch), work, p.checkpoint_every)
            model = phase.run(self.device, self.progress)
            wall = time.perf_counter() - t0
            weights = folder / "weights.safetensors"
            write_atomic(weights, lambda f: save_file({k: v.detach().cpu().contiguous()
                                                       for k, v in model.state_dict().items()}, str(f)))
            predictions = folder / "predictions.safetensors"
            clean, adv = test_predictions(model)
            labels = load_mnist("test").labels.to(torch.uint8)
            write_atomic(predictions, lambda f: save_file({"clean": clean, "fgsm": adv}, str(f)))
            objective = None if net.objective is None else {**net.objective.as_dict(),
                                                            "description": net.objective.describe()}
            epochs = len(phase.curve["epoch"])
            return {"spec": net.spec, "seed": seed, "label": net.label, "weights_sha256": file_digest(weights, "sha256"),
                    "predictions_sha256": file_digest(predictions, "sha256"),
                    "test_error_all": float((clean != labels).float().mean()),
                    "fgsm_error_all": float((adv != labels).float().mean()),
                    "train_error": error_rate(model, both), "test_error": phase.curve["test_error"][-1],
                    "epochs": epochs, "second_phase": phase2["phase"],
                    "reached_target": bool(not continues or phase.curve["valid_objective"][-1]
                                           <= float(es["train_objective_at_best"])),
                    "n_train": len(both), "recipe": recipe_dict(recipe), "objective": objective,
                    "wall_time_s": round(wall, 2), "curve": phase.curve, "final": curve_summary(phase.curve)}

        result, folder = self.runner.run(f"train {net.key} s{seed}", rt_inputs, second_phase)
        return result | {"early_stop": es, "checkpoint": str(folder / "weights.safetensors"), "stopped_on": net.stop_on}

    def _work(self, name: str, inputs: dict[str, Any]) -> Path:
        return self.out / "work" / self.runner.folder(name, inputs).name

    def _store_stage(self, net: Net) -> dict[str, Any]:
        """The shallow softmax and the RBF net: their own recipes, through the model store."""
        n = self.profile.store_subset
        inputs = {"spec": net.spec, "objective": None, "seed": self.seed, "train_subset": n, "version": __version__}

        def compute(folder: Path) -> dict[str, Any]:
            tm = train(net.spec, seed=self.seed, train_subset=n, device=self.device, progress=self.progress)
            keep = ("spec", "seed", "train_error", "test_error", "weights_sha256", "wall_time_s", "recipe", "epochs",
                    "n_train", "objective")
            return {k: tm.meta.get(k) for k in keep} | {"checkpoint": str(tm.path), "label": net.label}

        result, _ = self.runner.run(f"train {net.key}", inputs, compute)
        return result

    def _load(self, net: Net) -> nn.Module:
        m = self.models[net.key]
        if net.is_maxout:
            path = Path(m["checkpoint"])
            if file_digest(path, "sha256") != m["weights_sha256"]:
                raise CheckpointError(f"{path} does not match the hash its stage recorded; delete the stage folder.")
            model = build_model(net.spec)
            model.load_state_dict(load_file(str(path)))
            return model.to(self.device).eval()
        return self.load_checkpoint_checked(m["checkpoint"], net.spec, m["weights_sha256"])
