"""Genuine MNIST / Fashion-MNIST: offline-safe fetch, checksums, IDX parsing, the papers' splits."""

from .datasets import N_CLASSES, SPLIT_SEED, SPLITS, ImageSet, load_mnist, split_indices
from .idx import parse_idx
from .sources import SOURCES, fetch, locate
from .user import EvalData, load_eval_data

__all__ = ["ImageSet", "load_mnist", "split_indices", "fetch", "locate", "parse_idx", "SOURCES",
           "SPLITS", "SPLIT_SEED", "N_CLASSES", "EvalData", "load_eval_data"]
