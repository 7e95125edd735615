"""The ensemble ("ensembles are not a defence") and L1 weight decay on the first layer beside plain and adversarial
training: nets trained by the original maxout recipe for a fixed number of epochs, each its own stage, then FGSM."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ... import __version__
from ...attacks import Misclassification, fgsm, save_adversarial
from ...data import ImageSet, load_mnist
from ...errors import CheckpointError
from ...io import file_digest, write_atomic
from ...models import Ensemble, build_model, error_rate, predict
from ...models.train import recipe_dict
from .common import EPSILON, FixedNet, Stages, ensemble_members, l1_arms, mean_or_none, predict_confidence
from .training import Phase, Probe


class FixedStages(Stages):
    """The ensemble and the L1-decay arms, nets trained for a fixed number of epochs, mixed into the experiment."""

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
