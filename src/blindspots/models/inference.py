"""Running a model for inference: logits and predicted labels in eval mode, in batches, without autograd, and
the error rate on a data set. Training lives in models.train."""

from __future__ import annotations

import torch
from torch import nn

from ..data import ImageSet


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """The model's outputs (on the CPU) in eval mode, in batches, without autograd; restores the model's mode.

    The one way the package runs a model for inference (predict, error_rate, the experiments' evaluations)."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else images.device
        out = [model(images[i:i + batch_size].to(device)).cpu() for i in range(0, images.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Predicted labels (argmax of `predict_logits`)."""
    logits = predict_logits(model, images, batch_size)
    return logits.argmax(dim=1) if logits.numel() else torch.empty(0, dtype=torch.long)


def error_rate(model: nn.Module, data: ImageSet) -> float:
    """Share of misclassified images, in [0, 1]."""
    return float((predict(model, data.images) != data.labels).float().mean())


__all__ = ["predict_logits", "predict", "error_rate"]
