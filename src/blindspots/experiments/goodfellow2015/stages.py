"""The stages of `reproduce goodfellow2015`, each cached by a key of its inputs (see blindspots.stages):
train the models (maxout nets by the early-stopping protocol, one stage per phase and seed), FGSM on each at
a list of ε, re-verification from disk, transfer, rubbish inputs; then results.json and the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from ... import __version__
from ...attacks import Misclassification, fgsm, load_adversarial, save_adversarial, verify
from ...attacks.base import AttackResult
from ...data import ImageSet, load_mnist
from ...errors import CheckpointError
from ...io import file_digest, write_atomic, write_json_atomic
from ...models import Ensemble, build_model, error_rate, predict, train
from ...models.train import recipe_dict
from ...models.zoo import BinaryLogistic, TwoClassLogits
from ...stages import StageSource
from ..stages import Experiment
from . import figures
from .config import (EPSILON, EPSILONS, LOGREG, LOGREG_CLASSES, LOGREG_DECAY, LOGREG_LABEL, PAPER, FixedNet, Net,
                     Profile, binary_error, ensemble_members, fit_logreg, l1_arms, logreg_data, mean_or_none, nets,
                     noise_settings, predict_confidence, protocol_recipe, rubbish_images)
from .findings import facts, findings
from .protocol import Phase, Probe, curve_summary, objective_value, split_rows, test_probe, validation_probe
from .report import build_report
from ...report.document import write_report


# What each kind of stage runs (stages.StageSource): the modules its compute calls into, with what they import, and
# this module as a file. Every stage reads earlier stages' output under a key of its hash (weights_sha256,
# file_sha256), so none needs another's parts. tests/test_stage_sources.py traces real tiny runs of these kinds.
_HERE = ("experiments/goodfellow2015/stages.py",)
_LOAD = ("blindspots.experiments.goodfellow2015.config", "blindspots.experiments.stages", "blindspots.models.store",
         "blindspots.models.zoo")
_MODELS = StageSource(modules=("blindspots.experiments.goodfellow2015.protocol", *_LOAD), files=_HERE)
_FGSM = StageSource(modules=("blindspots.attacks.fgsm", "blindspots.attacks.storage", *_LOAD), files=_HERE)
STAGE_SOURCES = dict.fromkeys(("early-stop ", "train ", "fixed "), _MODELS) | {
    "fgsm ": _FGSM, "ensemble": _FGSM.with_(modules=("blindspots.models.ensemble",)),
    "transfer": StageSource(modules=("blindspots.attacks.storage", *_LOAD), files=_HERE),
    "rubbish": StageSource(modules=_LOAD, files=_HERE)}


class Goodfellow2015(Experiment):
    """The experiment: holds the profile, the stage runner, and what each stage returned."""

    profile: Profile
    stage_sources = STAGE_SOURCES

    # ---- models -------------------------------------------------------------------------------
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
                              offset=(best_epoch, best_epoch * int(es["batches_per_epoch"])))
            else:
                phase = Phase(net.spec, both, recipe, net.objective, seed, best_epoch,
                              test_probe(net, p, best_epoch), work, p.checkpoint_every)
            model = phase.run(self.device, self.progress)
            wall = time.perf_counter() - t0
            weights = folder / "weights.safetensors"
            write_atomic(weights, lambda f: save_file({k: v.detach().cpu().contiguous()
                                                       for k, v in model.state_dict().items()}, str(f)))
            objective = None if net.objective is None else {**net.objective.as_dict(),
                                                            "description": net.objective.describe()}
            epochs = len(phase.curve["epoch"])
            return {"spec": net.spec, "seed": seed, "label": net.label, "weights_sha256": file_digest(weights, "sha256"),
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

    def _logreg_stage(self) -> tuple[dict[str, Any], Path]:
        inputs = {"model": LOGREG, "classes": LOGREG_CLASSES, "weight_decay": LOGREG_DECAY, "version": __version__}

        def compute(folder: Path) -> dict[str, Any]:
            t0 = time.perf_counter()
            x, y, _ = logreg_data("train")
            model = fit_logreg(x, y)
            wall = time.perf_counter() - t0
            xt, yt, _ = logreg_data("test")
            weights = folder / "logreg37.safetensors"
            write_atomic(weights, lambda p: save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                                      str(p)))
            return {"label": LOGREG_LABEL, "weights_sha256": file_digest(weights, "sha256"),
                    "train_error": binary_error(model, x, y), "test_error": binary_error(model, xt, yt),
                    "n_train": int(y.numel()), "n_test": int(yt.numel()), "wall_time_s": round(wall, 2),
                    "recipe": {"optimizer": "lbfgs (full batch, to the optimum)", "weight_decay": LOGREG_DECAY,
                               "loss": "mean logistic loss + (λ/2)·‖w‖²",
                               "classes": f"{LOGREG_CLASSES[0]} -> 0 (negative), {LOGREG_CLASSES[1]} -> 1 (positive)"}}

        return self.runner.run(f"train {LOGREG}", inputs, compute)

    def _load_logreg(self, folder: Path) -> BinaryLogistic:
        weights = folder / "logreg37.safetensors"
        if file_digest(weights, "sha256") != self.models[LOGREG]["weights_sha256"]:
            raise RuntimeError(f"{weights} does not match the hash its stage recorded; delete the stage folder.")
        model = BinaryLogistic()
        model.load_state_dict(load_file(str(weights)))
        return model.to(self.device).eval()

    # ---- FGSM ---------------------------------------------------------------------------------
    def _fgsm_stage(self, key: str, label: str, load: Callable[[], nn.Module],
                    data: Callable[[], tuple[Tensor, Tensor, np.ndarray]], independent: bool,
                    n: int | None) -> tuple[dict[str, Any], Path]:
        inputs = {"model": key, "weights": self.models[key]["weights_sha256"], "epsilons": EPSILONS,
                  "n_attack": n, "attack": "fgsm-untargeted", "version": __version__}

        def compute(folder: Path) -> dict[str, Any]:
            model = load()
            x, y, rows = data()
            result = fgsm(model, x.to(self.device), Misclassification(y.to(self.device)), EPSILONS)
            k = EPSILONS.index(EPSILON)
            path = folder / "fgsm_eps0.25.safetensors"
            save_adversarial(path, _at_budget(result, k))
            curve_err, curve_conf = [], []
            for j in range(len(EPSILONS)):
                pred, conf, _ = predict_confidence(model, result.x_adv[j].cpu(), independent)
                if not torch.equal(pred, result.pred[j].cpu()):
                    raise RuntimeError(f"{label}: predictions at ε={EPSILONS[j]} differ between the attack's own "
                                       "re-check and a second forward pass.")
                wrong = pred != y
                curve_err.append(float(wrong.float().mean()))
                curve_conf.append(mean_or_none(conf[wrong]))
            del result
            at = self._reverify(model, path, independent)
            if abs(at["error"] - curve_err[k]) > 0:
                raise RuntimeError(f"{label}: the error re-computed from disk ({at['error']}) differs from the "
                                   f"attack's ({curve_err[k]}).")
            if key != LOGREG:  # the logistic regression has its own figure (the paper's Figure 2)
                figures.examples(load_adversarial(path), model, independent, folder / "examples.png", label)
            return {"model": key, "label": label, "n_attacked": int(y.numel()), "test_rows": rows.tolist(),
                    "epsilons": list(EPSILONS), "error": curve_err, "wrong_confidence": curve_conf,
                    "at_0.25": at, "confidence_measure": "unit output exp(logit)" if independent
                    else "softmax probability"}

        return self.runner.run(f"fgsm {key}", inputs, compute)

    def _reverify(self, model: nn.Module, path: Path, independent: bool) -> dict[str, Any]:
        """Every number at ε = 0.25, recomputed from the saved set by fresh forward passes."""
        t = load_adversarial(path)
        x, x_adv, labels = t["x"], t["x_adv"][0], t["label"]
        success = verify(model, x_adv.to(self.device), Misclassification(labels.to(self.device))).cpu()
        if not torch.equal(success, t["success"][0].bool()):
            raise RuntimeError(f"{path}: {int((success != t['success'][0].bool()).sum())} images no longer "
                               "match their saved success flag.")
        pred_c, conf_c, _ = predict_confidence(model, x, independent)
        pred, conf, _ = predict_confidence(model, x_adv, independent)
        wrong, wrong_c = pred != labels, pred_c != labels
        return {"error": float(wrong.float().mean()), "clean_error": float(wrong_c.float().mean()),
                "wrong_confidence": mean_or_none(conf[wrong]),
                "mean_confidence": float(conf.mean()), "clean_confidence": float(conf_c.mean()),
                "flipped": float((wrong & ~wrong_c).float().sum() / max(int((~wrong_c).sum()), 1)),
                "zero_gradient_images": int((t["linf"][0] == 0).sum()),
                "max_linf": float(t["linf"][0].max()), "reverified": True, "file": path.name,
                "file_sha256": file_digest(path, "sha256")}

    # ---- ensemble and L1 decay: nets trained for a fixed number of epochs ------------------------
    def _fixed_stage(self, net: FixedNet, rows: ImageSet) -> dict[str, Any]:
        """One net of the ensemble or L1 sections, its own stage named by what it is (not by its role), so the
        plain L1 arm and the first ensemble member are one stage when their spec and budget agree."""
        recipe = net.recipe
        inputs = {"spec": net.spec, "objective": None if net.objective is None else net.objective.as_dict(),
                  "seed": net.seed, "recipe": recipe_dict(recipe), "rows": rows.name, "n_train": len(rows.labels),
                  "budget": "fixed epochs", "version": __version__}
        kind = net.objective.slug if net.objective is not None else f"l1 {net.l1:g}" if net.l1 else "plain"
        name = f"fixed {net.spec} {kind} s{net.seed}"

        def compute(folder: Path) -> dict[str, Any]:
            t0 = time.perf_counter()
            x, y = rows.images, rows.labels
            probe = Probe({"train_error": lambda model, e: float((predict(model, x) != y).float().mean())})
            phase = Phase(net.spec, rows, recipe, net.objective, net.seed, net.epochs, probe,
                          self._work(name, inputs), self.profile.checkpoint_every)
            model = phase.run(self.device, self.progress)
            wall = time.perf_counter() - t0
            weights = folder / "weights.safetensors"
            write_atomic(weights, lambda f: save_file({k: v.detach().cpu().contiguous()
                                                       for k, v in model.state_dict().items()}, str(f)))
            test = load_mnist("test")
            return {"spec": net.spec, "seed": net.seed, "epochs": net.epochs, "l1_first": net.l1,
                    "objective": None if net.objective is None else net.objective.describe(),
                    "weights_sha256": file_digest(weights, "sha256"), "train_error": phase.curve["train_error"][-1],
                    "test_error": error_rate(model, test), "n_train": len(y), "recipe": recipe_dict(recipe),
                    "wall_time_s": round(wall, 2), "curve": phase.curve}

        result, folder = self.runner.run(name, inputs, compute)
        return result | {"checkpoint": str(folder / "weights.safetensors")}

    def _load_fixed(self, trained: dict[str, Any]) -> nn.Module:
        path = Path(trained["checkpoint"])
        if file_digest(path, "sha256") != trained["weights_sha256"]:
            raise CheckpointError(f"{path} does not match the hash its stage recorded; delete the stage folder.")
        model = build_model(trained["spec"])
        model.load_state_dict(load_file(str(path)))
        return model.to(self.device).eval()

    def _attacked(self) -> tuple[Tensor, Tensor]:
        d = load_mnist("test", subset=self.profile.n_attack)
        return d.images, d.labels

    def _fgsm_once(self, name: str, weights: str, load: Callable[[], nn.Module]) -> dict[str, Any]:
        """FGSM at ε = 0.25 on one model, its set saved and every number re-verified from disk."""
        inputs = {"model": name, "weights": weights, "epsilon": EPSILON, "n_attack": self.profile.n_attack,
                  "attack": "fgsm-untargeted", "version": __version__}

        def compute(folder: Path) -> dict[str, Any]:
            model = load()
            x, y = self._attacked()
            result = fgsm(model, x.to(self.device), Misclassification(y.to(self.device)), [EPSILON])
            path = folder / "fgsm_eps0.25.safetensors"
            save_adversarial(path, result)
            at = self._reverify(model, path, False)
            if at["error"] != float(result.success[0].float().mean()):
                raise RuntimeError(f"{name}: the error re-computed from disk ({at['error']}) differs from the "
                                   "attack's.")
            return {"n_attacked": int(y.numel()), "at_0.25": at}

        return self.runner.run(f"fgsm {name}", inputs, compute)[0]

    def _ensemble_stage(self, members: list[dict[str, Any]]) -> dict[str, Any]:
        """The ensemble (mean of the members' softmax outputs) attacked by FGSM with its own gradient, and with
        each member's gradient in turn; every number taken from a fresh forward pass of the ensemble on the
        images re-read from disk (the ensemble's set in full, the members' as the int8 sign of each step)."""
        inputs = {"members": [m["weights_sha256"] for m in members], "epsilon": EPSILON,
                  "n_attack": self.profile.n_attack, "attack": "fgsm-untargeted", "version": __version__}

        def compute(folder: Path) -> dict[str, Any]:
            nets = [self._load_fixed(m) for m in members]
            ensemble = Ensemble(nets).eval()
            test = load_mnist("test")
            x, y = self._attacked()
            crit = Misclassification(y.to(self.device))
            result = fgsm(ensemble, x.to(self.device), crit, [EPSILON])
            path = folder / "fgsm_eps0.25.safetensors"
            save_adversarial(path, result)
            whole = self._reverify(ensemble, path, False)
            if whole["error"] != float(result.success[0].float().mean()):
                raise RuntimeError("ensemble: the error re-computed from disk differs from the attack's.")
            signs, attacked, own = [], [], []
            for net in nets:
                r = fgsm(net, x.to(self.device), crit, [EPSILON])
                x_adv = r.x_adv[0].cpu()
                signs.append(torch.sign(x_adv - x).to(torch.int8))  # x_adv = clip(x + ε·sign), exactly
                attacked.append(x_adv)
                own.append(float(r.success[0].float().mean()))
            sign_path = folder / "member_fgsm_signs.safetensors"
            write_atomic(sign_path, lambda f: save_file({"sign": torch.stack(signs).contiguous(), "label": y}, str(f)))
            stored = load_file(str(sign_path))
            one = []
            for i, (sign, before) in enumerate(zip(stored["sign"], attacked)):
                x_adv = torch.add(x, sign.float(), alpha=EPSILON).clamp_(0, 1)
                if not torch.equal(x_adv, before):
                    raise RuntimeError(f"ensemble: member {i}'s FGSM images rebuilt from disk differ from the "
                                       "attack's.")
                pred, conf, _ = predict_confidence(ensemble, x_adv)  # the numbers: from the images on disk
                wrong = pred != stored["label"]
                one.append({"seed": members[i]["seed"], "error": float(wrong.float().mean()),
                            "wrong_confidence": mean_or_none(conf[wrong]), "error_on_member": own[i]})
            errors = [o["error"] for o in one]
            return {"n_members": len(nets), "n_attacked": int(y.numel()),
                    "clean_test_error": error_rate(ensemble, test),
                    "members": [{"seed": m["seed"], "test_error": m["test_error"], "train_error": m["train_error"],
                                 "weights_sha256": m["weights_sha256"]} for m in members],
                    "ensemble_gradient": whole, "one_member_gradient": one,
                    "one_member_error": {"mean": float(np.mean(errors)), "min": min(errors), "max": max(errors)},
                    "one_member_wrong_confidence": mean_or_none(torch.tensor(
                        [o["wrong_confidence"] for o in one if o["wrong_confidence"] is not None])),
                    "signs_file": sign_path.name, "signs_sha256": file_digest(sign_path, "sha256"),
                    "reverified": True}

        return self.runner.run("ensemble", inputs, compute)[0]

    def _ensemble_section(self, rows: ImageSet) -> dict[str, Any] | None:
        p = self.profile
        if not p.ensemble_members:
            return None
        members = [self._fixed_stage(m, rows) for m in tqdm(ensemble_members(p, self.seed), desc="ensemble members",
                                                              disable=not self.progress, leave=False)]
        return {"spec": p.ensemble_spec, "epochs": p.ensemble_epochs, "n_train": len(rows.labels),
                "rows": rows.name, "recipe_note": ensemble_members(p, self.seed)[0].recipe.note,
                "member_checkpoints": [m["checkpoint"] for m in members]} | self._ensemble_stage(members)

    def _l1_section(self, rows: ImageSet) -> dict[str, Any] | None:
        p = self.profile
        arms = l1_arms(p, self.seed)
        if not arms:
            return None
        out = []
        for arm in tqdm(arms, desc="L1 decay arms", disable=not self.progress, leave=False):
            trained = self._fixed_stage(arm, rows)
            attack = self._fgsm_once(f"{arm.key} {arm.spec} s{arm.seed}", trained["weights_sha256"],
                                     lambda trained=trained: self._load_fixed(trained))
            out.append({"key": arm.key, "label": arm.label, "l1_first": arm.l1,
                        "objective": trained["objective"], "train_error": trained["train_error"],
                        "train_error_curve": trained["curve"]["train_error"], "test_error": trained["test_error"],
                        "fgsm_error": attack["at_0.25"]["error"], "fgsm": attack["at_0.25"],
                        "weights_sha256": trained["weights_sha256"], "checkpoint": trained["checkpoint"],
                        "wall_time_s": trained["wall_time_s"]})
        return {"spec": p.l1_spec, "epochs": p.l1_epochs, "n_train": len(rows.labels), "rows": rows.name,
                "seed": self.seed, "arms": out}

    # ---- transfer and rubbish -----------------------------------------------------------------
    def _transfer_stage(self, keys: list[str], loaders: dict[str, Callable[[], nn.Module]]) -> dict[str, Any]:
        inputs = {"sets": {k: self.attacks[k][0]["at_0.25"]["file_sha256"] for k in keys},
                  "columns": {k: self.models[k]["weights_sha256"] for k in keys}, "version": __version__}

        def compute(folder: Path) -> dict[str, Any]:
            models = {k: loaders[k]() for k in keys}
            rows: dict[str, dict[str, float]] = {}
            for r in keys:
                t = load_adversarial(self.attacks[r][1] / "fgsm_eps0.25.safetensors")
                rows[r] = {c: float((predict_confidence(models[c], t["x_adv"][0], c == "rbf")[0] != t["label"])
                                    .float().mean()) for c in keys}
            return {"rows": rows, "columns": keys}

        return self.runner.run("transfer", inputs, compute)[0]

    def _rubbish_stage(self, loaders: dict[str, Callable[[], nn.Module]]) -> dict[str, Any]:
        settings = noise_settings(load_mnist("train").images)
        inputs = {"settings": settings, "n": self.profile.n_noise, "seed": self.seed,
                  "models": {k: self.models[k]["weights_sha256"] for k in loaders}, "version": __version__}

        def compute(folder: Path) -> dict[str, Any]:
            out: dict[str, Any] = {}
            models = {key: load() for key, load in loaders.items()}
            for name, s in settings.items():
                x = rubbish_images(self.profile.n_noise, s, self.seed)
                out[name] = {}
                for key, model in models.items():
                    pred, conf, digit = predict_confidence(model, x, key == "rbf")
                    out[name][key] = {"fooled": float(digit.float().mean()), "confidence": mean_or_none(conf[digit]),
                                      "mean_confidence": float(conf.mean()),
                                      "classes": torch.bincount(pred[digit], minlength=10).tolist()}
            return {"settings": settings, "headline": next(iter(settings)), "results": out,
                    "n": self.profile.n_noise, "threshold": 0.5}

        return self.runner.run("rubbish", inputs, compute)[0]

    # ---- the whole run ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t_start = time.perf_counter()
        all_nets = nets(self.profile)
        runs: dict[str, list[dict[str, Any]]] = {}
        jobs = [(net, s) for net in all_nets for s in (self._seeds(net) if net.is_maxout else [self.seed])]
        for net, seed in tqdm(jobs, desc="train models (net, seed)", unit="model", disable=not self.progress):
            t = time.perf_counter()
            result = self._protocol_stages(net, seed) if net.is_maxout else self._store_stage(net)
            runs.setdefault(net.key, []).append(result)
            self.timings[f"train {net.key} s{seed}"] = time.perf_counter() - t
        self.models = {k: v[0] for k, v in runs.items()}
        self.models[LOGREG], logreg_folder = self._logreg_stage()

        t = time.perf_counter()
        loaders: dict[str, Callable[[], nn.Module]] = {net.key: (lambda net=net: self._load(net)) for net in all_nets}

        def test_data() -> tuple[Tensor, Tensor, np.ndarray]:
            d = load_mnist("test", subset=self.profile.n_attack)
            return d.images, d.labels, d.indices

        for net in tqdm(all_nets, desc="FGSM", disable=not self.progress, leave=False):
            self.attacks[net.key] = self._fgsm_stage(net.key, net.label, loaders[net.key], test_data,
                                                     net.independent_outputs, self.profile.n_attack)
        self.attacks[LOGREG] = self._fgsm_stage(LOGREG, LOGREG_LABEL,
                                                lambda: TwoClassLogits(self._load_logreg(logreg_folder)),
                                                lambda: logreg_data("test"), False, None)
        self.timings["fgsm"] = time.perf_counter() - t

        t = time.perf_counter()
        keys = [n.key for n in all_nets]
        transfer = self._transfer_stage(keys, loaders)
        rubbish = self._rubbish_stage(loaders)
        self.timings["transfer and rubbish"] = time.perf_counter() - t

        rows = split_rows(self.profile)[0] if self.profile.ensemble_members or self.profile.l1_coefficients else None
        t = time.perf_counter()
        ensemble = self._ensemble_section(rows) if rows is not None else None
        if ensemble is not None:
            self.timings["ensemble"] = time.perf_counter() - t
        t = time.perf_counter()
        l1 = self._l1_section(rows) if rows is not None else None
        if l1 is not None:
            self.timings["L1 decay"] = time.perf_counter() - t

        t = time.perf_counter()
        fig_paths = figures.draw_all(self.out, self.attacks, self._load_logreg(logreg_folder), runs)
        self.timings["figures"] = time.perf_counter() - t
        attacks = {k: v[0] for k, v in self.attacks.items()}
        curves = {k: [{"seed": r["seed"], "early_stop": r["early_stop"], "retrain": r["curve"]} for r in v]
                  for k, v in runs.items() if "early_stop" in v[0]}
        results = {
            "experiment": PAPER, "profile": asdict(self.profile), "seed": self.seed,
            "models": self.models, "seeds": {k: [_strip(r) for r in v] for k, v in runs.items()}, "curves": curves,
            "fgsm": attacks, "transfer": transfer, "rubbish": rubbish, "ensemble": ensemble, "l1_decay": l1,
            "findings": findings(self.models, attacks, transfer, rubbish, curves, ensemble, l1),
            "figures": fig_paths, "stages": [asdict(r) for r in self.runner.log],
            "facts": facts(self.profile, self.seed, self.device),
            "wall_time_s": {k: round(v, 2) for k, v in self.timings.items()},
        }
        results["wall_time_s"]["total"] = round(time.perf_counter() - t_start, 2)
        write_json_atomic(self.out / "results.json", results, sort_keys=False)  # the report reads it in run order
        write_report(build_report(results), self.out)
        return results


def _at_budget(result: AttackResult, k: int) -> AttackResult:
    """The fixed-budget result restricted to its k-th ε (x_adv [1, N, ...])."""
    sl = slice(k, k + 1)
    return replace(result, x_adv=result.x_adv[sl], success=result.success[sl], pred=result.pred[sl],
                   confidence=result.confidence[sl], rms=result.rms[sl], l2=result.l2[sl],
                   linf=result.linf[sl], budgets=(result.budgets or EPSILONS)[k:k + 1])


def _strip(run: dict[str, Any]) -> dict[str, Any]:
    """A seed's model summary without its curves (those live under results["curves"])."""
    return {k: v for k, v in run.items() if k not in ("curve", "early_stop")}
