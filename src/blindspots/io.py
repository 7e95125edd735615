"""Atomic file writes, hashing (of objects, files and the package's own source) and the BLINDSPOTS_HOME location."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from .errors import DataError, OutputError

# The installed package's folder; the source hashes below read the files under it.
SOURCE_ROOT = Path(__file__).resolve().parent
SOURCE_FILES = ("*.py", "published.json")


def user_path(value: str | os.PathLike[str], what: str) -> Path:
    """`value` with a leading ~ or ~user expanded; an unknown user is a clear error naming `what` (its source)."""
    try:
        return Path(value).expanduser()
    except RuntimeError:
        raise DataError(f"{what}={str(value)!r}: cannot expand {str(value).split('/')[0]!r} (no such user or no "
                        "home folder); give an absolute path instead.") from None


def home() -> Path:
    """Folder for data and trained models: $BLINDSPOTS_HOME, default ~/.cache/blindspots."""
    env = os.environ.get("BLINDSPOTS_HOME")
    root = user_path(env, "BLINDSPOTS_HOME") if env else Path.home() / ".cache" / "blindspots"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the blindspots home folder {root} ({exc.strerror}); set "
                          "BLINDSPOTS_HOME to a folder you can write.") from None
    return root


def safe_name(name: str) -> str:
    """`name` as a file name: letters, digits, '-', '_' and '.' kept, anything else '_'."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def source_hash(*parts: str, exclude: tuple[str, ...] = (), length: int = 12) -> str:
    """Short sha256 of the package's own source under `parts` (subpackage folders or module files relative to the
    package, e.g. "models", "io.py"; none: the whole package) less `exclude` (the same kind of paths, e.g.
    "report" or "models/external.py"): the sorted relative paths and bytes of its .py files and published.json. Cached keys built on it change whenever that code changes, so a fix never
    silently reuses old weights or results. Computed once per process for each (root, parts, exclude)."""
    return _source_hash(SOURCE_ROOT, tuple(sorted(parts)), tuple(sorted(exclude)))[:length]


@cache
def _source_hash(root: Path, parts: tuple[str, ...], exclude: tuple[str, ...]) -> str:
    files: set[Path] = set()
    for part in parts or ("",):
        base = root / part
        if base.is_file():
            files.add(base)
        elif base.is_dir():
            files.update(f for pattern in SOURCE_FILES for f in base.rglob(pattern) if f.is_file())
        else:
            raise FileNotFoundError(f"source_hash: {base} is neither a module nor a subpackage of {root}")
    h = hashlib.sha256()
    for rel in sorted(f.relative_to(root).as_posix() for f in files):
        if any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in exclude) or "__pycache__" in rel:
            continue
        h.update(rel.encode() + b"\0")
        h.update((root / rel).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def output_folder(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """`path` as an output folder, created if needed; a clear error for "" (which would write into the current
    folder), an existing file, or a path this process cannot create or write."""
    if str(path).strip() == "":
        raise OutputError(f"{what} is empty; name an output folder, e.g. {what} runs/mine.")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} is an existing file, not a folder; choose another path.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{what} {folder} cannot be created ({exc.strerror}); choose a folder you can write.") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {folder} is not writable by this user; choose a folder you can write.")
    return folder


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success fsync and rename it over `target`.

    A reader never sees a half-written file: either the old file (or none) or the new one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(target: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Call writer(tmp_path), then atomically move the result to `target`."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    return write_atomic(target, lambda p: p.write_text(text, encoding="utf-8"))


def write_json_atomic(target: str | os.PathLike[str], obj: Any, sort_keys: bool = True) -> Path:
    """Strict JSON (NaN and infinities become null), written atomically."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=sort_keys, default=_json_default, allow_nan=False)
    return write_text_atomic(target, text + "\n")


def as_stored_json(obj: Any) -> Any:
    """`obj` as write_json_atomic stores it and json reads it back (tuples as lists, NaN as None, numpy as Python)."""
    return json.loads(json.dumps(_finite(obj), default=_json_default, allow_nan=False))


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def file_digest(path: str | os.PathLike[str], algo: str = "md5") -> str:
    """Hex digest of a file's bytes, read in chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stable_hash(obj: Any, length: int = 12) -> str:
    """Short sha256 of a JSON-serialisable object, independent of key order."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
