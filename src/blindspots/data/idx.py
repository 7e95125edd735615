"""Parse IDX files (the MNIST container format), raw or gzip-compressed, with strict checks."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from ..errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def decompress(raw: bytes, source: str) -> bytes:
    """`raw` itself, or its gunzipped content if it is gzip (detected by magic bytes, not by name)."""
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{source}: corrupt or truncated gzip file ({exc}). "
                            "Delete it and fetch it again (`blindspots data fetch`).") from exc
    return raw


def read_bytes(path: Path) -> bytes:
    """A file's content, decompressed if it is gzip."""
    return decompress(path.read_bytes(), str(path))


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into an array of the declared shape; refuse truncated or padded data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: not an IDX file (bad magic number). "
                        "Point --data-dir at the original MNIST *-ubyte files (raw or .gz).")
    code, ndim = data[2], data[3]
    if code not in _DTYPES or ndim == 0:
        raise DataError(f"{source}: unknown IDX type code 0x{code:02x} or zero dimensions.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[code])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{source}: IDX file {what}: {len(data)} bytes, header implies {expected}. "
                        "Delete it and fetch it again (`blindspots data fetch`).")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))
