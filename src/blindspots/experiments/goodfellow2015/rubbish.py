"""Rubbish-class examples: i.i.d. Gaussian noise images, and how often each model calls them a digit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ... import __version__
from ...data import load_mnist
from .common import Stages, mean_or_none, noise_settings, predict_confidence, rubbish_images


class RubbishStages(Stages):
    """The rubbish-class stage (Gaussian noise called a digit), mixed into the experiment."""

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
