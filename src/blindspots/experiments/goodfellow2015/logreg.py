"""§5 of Goodfellow et al. 2015: the logistic regression on 3s vs 7s (trained to its optimum in one stage); its FGSM
stage is `fgsm`'s, its figure (the paper's Figure 2) `figures.logreg_figure`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from ... import __version__
from ...io import file_digest, write_atomic
from ...models.zoo import BinaryLogistic
from .common import LOGREG, LOGREG_CLASSES, LOGREG_DECAY, LOGREG_LABEL, Stages, binary_error, fit_logreg, logreg_data


class LogregStages(Stages):
    """The 3-vs-7 logistic regression's training stage, mixed into the experiment."""

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
