"""Evaluation data a user points the tools at: the built-in datasets, a folder of IDX files, or an .npz with
`x` (N, C, H, W) and `y`, with its value bounds checked.

Skeleton: built-in datasets only until the rest lands (issue 12)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import DataError
from .datasets import N_CLASSES, load_mnist


@dataclass(frozen=True)
class EvalData:
    """Images [N, C, H, W] float32 within `bounds`, labels [N] int64 in 0..n_classes-1, and their provenance."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    bounds: tuple[float, float] = (0.0, 1.0)
    n_classes: int = N_CLASSES
    source: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_eval_data(spec: str, *, split: str = "test", n: int | None = None,
                   bounds: tuple[float, float] = (0.0, 1.0)) -> EvalData:
    """`spec`: "mnist", "fashion-mnist", a folder of IDX files or an .npz; `n`: keep the first n images of a
    fixed seeded order (None: all)."""
    if spec not in ("mnist", "fashion-mnist"):
        raise DataError(f"data {spec!r}: only 'mnist' and 'fashion-mnist' are supported so far.")
    data = load_mnist(split, dataset=spec, subset=n)
    return EvalData(data.images, data.labels, data.name, bounds, N_CLASSES, dict(data.checksums))


__all__ = ["EvalData", "load_eval_data"]
