"""§4 of Goodfellow et al. 2015, the fast gradient sign method: FGSM on every model at a list of ε, each ε = 0.25 set
saved and every number re-verified from disk, and the transfer of those sets between the models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ... import __version__
from ...attacks import Misclassification, fgsm, load_adversarial, save_adversarial, verify
from ...attacks.base import AttackResult
from ...data import load_mnist
from ...io import file_digest
from . import figures
from .common import EPSILON, EPSILONS, LOGREG, Stages, mean_or_none, predict_confidence


class FgsmStages(Stages):
    """FGSM on every model at a list of ε (each set re-verified from disk) and the transfer of the ε = 0.25 sets
    between the models, mixed into the experiment."""

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


def _at_budget(result: AttackResult, k: int) -> AttackResult:
    """The fixed-budget result restricted to its k-th ε (x_adv [1, N, ...])."""
    sl = slice(k, k + 1)
    return replace(result, x_adv=result.x_adv[sl], success=result.success[sl], pred=result.pred[sl],
                   confidence=result.confidence[sl], rms=result.rms[sl], l2=result.l2[sl],
                   linf=result.linf[sl], budgets=(result.budgets or EPSILONS)[k:k + 1])
