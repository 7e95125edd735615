"""Evaluation data a user points the tools at: the built-in datasets, a folder of IDX files, or an .npz with
`x` (N, C, H, W) or (N, H, W) and integer `y`, checked (shapes, labels, finite values within the bounds) so an
attack never runs on data it cannot perturb correctly. Never unpickles (np.load(allow_pickle=False))."""

from __future__ import annotations

import hashlib
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, InputError, SpecError
from ..io import file_digest, user_path
from .datasets import N_CLASSES, SPLITS, load_mnist, split_indices, subset_order
from .idx import parse_idx, read_bytes
from .sources import SOURCES

IDX_KINDS = {"train": "train", "test": "t10k"}  # split -> file prefix in an IDX folder
BOUNDS_FIX = ("pass --bounds lo,hi with your data's real range, or give images in [lo, hi] and let "
              "--mean/--std normalise them inside the model")


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
    fixed seeded order (None: all), so results are stable and a small n still covers every class. `split`:
    train/test (and P1/P2 for the built-in sets); an .npz is a single set, taken as "test"."""
    lo, hi = _check_bounds(bounds)
    if spec in SOURCES:
        if split not in SPLITS:
            raise SpecError(f"unknown split {split!r} for {spec}; choose one of {', '.join(SPLITS)}.")
        _check_n(n, split_indices(split).size, f"{spec}/{split}")
        data = load_mnist(split, dataset=spec, subset=n)
        x, y = data.images, data.labels
        _check_values(x, data.name, lo, hi)
        name = data.name
        source = {"dataset": spec, "split": split, **{f"{k}.md5": v for k, v in data.checksums.items()}}
        mnist_like = True
    else:
        path = user_path(spec, "--data")
        if path.is_dir():
            x, y, source = _read_idx_folder(path, split)
            mnist_like = True
        elif path.is_file():
            if split != "test":
                raise SpecError(f"--split {split}: an .npz holds a single set ({path.name}); leave --split out.")
            x, y, source = _read_npz(path)
            mnist_like = False
        else:
            raise DataError(f"--data {spec!r}: no such file or folder, and not a built-in dataset; give "
                            f"{' or '.join(sorted(SOURCES))}, a folder of IDX files, or an .npz with x and y.")
        _check_values(x, str(path), lo, hi)
        _check_n(n, len(y), str(path))
        if n is not None:
            keep = torch.from_numpy(np.sort(subset_order(len(y))[:n]))
            x, y = x[keep], y[keep]
        name = (f"{path.name}/{split}" if path.is_dir() else path.stem) + ("" if n is None else f"[{n}]")
    n_classes = max(int(y.max()) + 1, N_CLASSES if mnist_like else 2)
    return EvalData(x.contiguous(), y.contiguous(), name, (lo, hi), n_classes, source)


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    if len(bounds) != 2 or not all(math.isfinite(float(b)) for b in bounds) or not bounds[0] < bounds[1]:
        raise InputError(f"bounds {tuple(bounds)}: need two finite numbers lo < hi, e.g. --bounds 0,1.")
    return float(bounds[0]), float(bounds[1])


def _check_n(n: int | None, total: int, where: str) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= total):
        raise InputError(f"--n {n!r}: {where} holds {total} images; choose a whole number from 1 to {total} "
                         "(or leave --n out for all).")


def _find_idx(folder: Path, prefix: str, what: str) -> Path:
    names = (f"{prefix}-{what}", f"{prefix}-{what.replace('-idx', '.idx')}")  # -images-idx3-ubyte, -images.idx3-ubyte
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(f"{folder}: no {names[0]} (raw or .gz) in this folder; put the IDX image and label files "
                    f"there with the usual names ({prefix}-images-idx3-ubyte, {prefix}-labels-idx1-ubyte).")


def _read_idx_folder(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """Images and labels of `split` from IDX files of any H x W; uint8 images are scaled to [0, 1]. The md5 sums
    are of the decompressed content, as in data.sources (so genuine MNIST files show the published sums)."""
    if split not in IDX_KINDS:
        raise SpecError(f"split {split!r}: an IDX folder has the splits {', '.join(IDX_KINDS)}; choose one.")
    prefix = IDX_KINDS[split]
    paths = {"images": _find_idx(folder, prefix, "images-idx3-ubyte"),
             "labels": _find_idx(folder, prefix, "labels-idx1-ubyte")}
    arrays, source = {}, {}
    for key, path in paths.items():
        data = read_bytes(path)
        arrays[key] = parse_idx(data, str(path))
        source[key] = str(path)
        source[f"{key}.md5"] = hashlib.md5(data).hexdigest()
    return _to_tensors(arrays["images"], arrays["labels"], str(folder)) + (source,)


def _read_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """`x` and `y` of an .npz, without ever unpickling."""
    fix = "save it with np.savez(path, x=images, y=labels) (numeric arrays only)"
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npz (corrupt or truncated zip: {exc}); {fix}.") from None
    except ValueError:
        raise DataError(f"{path}: not an .npz file (it is neither a zip archive nor a .npy array, and pickled "
                        f"files are never loaded); {fix}.") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array, not an .npz with x and y; {fix}.")
    with archive:
        missing = [k for k in ("x", "y") if k not in archive.files]
        if missing:
            raise DataError(f"{path}: no array named {' or '.join(missing)} (it has: "
                            f"{', '.join(archive.files) or 'nothing'}); {fix}.")
        arrays = {}
        for key in ("x", "y"):
            try:
                arrays[key] = archive[key]
            except ValueError as exc:  # object arrays need pickle
                raise DataError(f"{path}: array {key!r} cannot be read without unpickling ({exc}); store plain "
                                f"numeric arrays: {fix}.") from None
            except (zipfile.BadZipFile, EOFError, OSError) as exc:
                raise DataError(f"{path}: array {key!r} is corrupt or truncated ({exc}); {fix}.") from None
    x, y = _to_tensors(arrays["x"], arrays["y"], str(path))
    return x, y, {"path": str(path), "md5": file_digest(path, "md5")}


def _to_tensors(x: np.ndarray, y: np.ndarray, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 images [N, C, H, W] (uint8 / 255, floats as they are) and int64 labels [N]."""
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{where}: images have shape {x.shape}; need (N, C, H, W) or (N, H, W).")
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        raise DataError(f"{where}: images have shape {x.shape}, which looks channels-last (N, H, W, C); "
                        "transpose them to (N, C, H, W): x.transpose(0, 3, 1, 2).")
    if y.ndim != 1:
        hint = " (one-hot? use y.argmax(axis=1))" if y.ndim == 2 else ""
        raise DataError(f"{where}: labels have shape {y.shape}; need one class index per image, shape (N,){hint}.")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{where}: {x.shape[0]} images but {y.shape[0]} labels; give one label per image.")
    if x.shape[0] == 0:
        raise DataError(f"{where}: no images (N = 0); give at least one image and label.")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels have dtype {y.dtype}, not integers; store class indices "
                        "(y.astype(np.int64) if they are whole numbers).")
    if x.dtype == np.uint8:
        images = torch.from_numpy(x.astype(np.float32) / 255.0)
    elif np.issubdtype(x.dtype, np.floating):
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    else:
        raise DataError(f"{where}: images have dtype {x.dtype}; give uint8 (0..255, divided by 255) or floats "
                        "(taken as they are).")
    labels = torch.from_numpy(y.astype(np.int64))
    if int(labels.min()) < 0:
        raise DataError(f"{where}: {int((labels < 0).sum())} negative labels (min {int(labels.min())}); labels are "
                        "class indices 0..C-1.")
    return images, labels


def _check_values(x: torch.Tensor, name: str, lo: float, hi: float) -> None:
    """Finite values within [lo, hi]; else say how many are not, and the range found."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise DataError(f"{name}: {int(bad.sum())} image values are NaN or infinite; clean or drop those images.")
    outside = (x < lo) | (x > hi)
    if bool(outside.any()):
        raise DataError(f"{name}: {int(outside.sum())} of {x.numel()} values lie outside the bounds [{lo:g}, {hi:g}] "
                        f"(min {float(x.min()):g}, max {float(x.max()):g}); {BOUNDS_FIX}.")


__all__ = ["EvalData", "load_eval_data"]
