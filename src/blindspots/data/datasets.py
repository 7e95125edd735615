"""Load verified MNIST / Fashion-MNIST as float tensors in [0, 1], with the papers' splits.

Splits: "train" (all 60,000 training images), "test" (10,000), and Szegedy et al.'s "P1" / "P2":
two disjoint halves of the training set, 30,000 each, drawn by a fixed seeded permutation
(numpy default_rng(SPLIT_SEED)) so every run and every user gets the same halves.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..errors import DataError, SpecError
from .idx import parse_idx
from .sources import get_source, locate, verified_bytes

SPLITS = ("train", "test", "P1", "P2")
SPLIT_SEED = 13126199  # arXiv 1312.6199; fixes the P1/P2 halves and the subset order
N_CLASSES = 10


@dataclass(frozen=True)
class ImageSet:
    """Images [N, 1, 28, 28] float32 in [0, 1], labels [N] int64, and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    dataset: str
    split: str
    indices: np.ndarray  # row numbers in the source IDX file, for traceability
    checksums: dict[str, str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.split}" + ("" if self._is_whole() else f"[{len(self)}]")

    def _is_whole(self) -> bool:
        full = 10_000 if self.split == "test" else (60_000 if self.split == "train" else 30_000)
        return len(self) == full


@lru_cache(maxsize=4)
def _load_arrays(dataset: str, data_dir: str | None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    source = get_source(dataset)
    paths = locate(dataset, data_dir)
    arrays, sums = {}, {}
    for stem, path in paths.items():
        data = verified_bytes(path, stem, source)
        arrays[stem] = parse_idx(data, str(path))
        sums[stem] = hashlib.md5(data).hexdigest()
    images = (arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"])
    labels = (arrays["train-labels-idx1-ubyte"], arrays["t10k-labels-idx1-ubyte"])
    for im, lb in zip(images, labels):
        if im.shape[1:] != (28, 28) or im.shape[0] != lb.shape[0]:
            raise DataError(f"{dataset}: image/label files disagree: {im.shape} vs {lb.shape}.")
        if lb.max() >= N_CLASSES:
            raise DataError(f"{dataset}: label {int(lb.max())} out of range 0..9.")
    return arrays, sums


def split_indices(split: str, n_train: int = 60_000) -> np.ndarray:
    """Row numbers of a split; P1/P2 are the two halves of a seeded permutation, each sorted."""
    if split == "train":
        return np.arange(n_train)
    if split in ("P1", "P2"):
        perm = np.random.default_rng(SPLIT_SEED).permutation(n_train)
        half = perm[: n_train // 2] if split == "P1" else perm[n_train // 2:]
        return np.sort(half)
    if split == "test":
        return np.arange(10_000)
    raise SpecError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}.")


def subset_order(n: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """A fixed permutation of range(n): taking its first k rows gives a class-balanced-ish subset."""
    return np.random.default_rng(seed).permutation(n)


def load_mnist(split: str = "train", *, dataset: str = "mnist", subset: int | None = None,
               data_dir: str | os.PathLike[str] | None = None) -> ImageSet:
    """The verified images and labels of one split; `subset=k` keeps k rows in a fixed seeded order.

    The subset is drawn (not the first k rows), so a small subset still covers every class.
    """
    if split not in SPLITS:
        raise SpecError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
    arrays, sums = _load_arrays(dataset, str(data_dir) if data_dir else None)
    kind = "t10k" if split == "test" else "train"
    x_all = arrays[f"{kind}-images-idx3-ubyte"]
    y_all = arrays[f"{kind}-labels-idx1-ubyte"]
    idx = split_indices(split, x_all.shape[0])
    if subset is not None:
        if subset <= 0 or subset > idx.size:
            raise SpecError(f"subset must be between 1 and {idx.size} for split {split!r}, got {subset}.")
        idx = np.sort(idx[subset_order(idx.size)[:subset]])
    images = torch.from_numpy(x_all[idx].astype(np.float32) / 255.0).unsqueeze(1)
    labels = torch.from_numpy(y_all[idx].astype(np.int64))
    return ImageSet(images=images, labels=labels, dataset=dataset, split=split, indices=idx,
                    checksums={k: v for k, v in sums.items() if k.startswith(kind)})
