"""Pin torch and the BLAS libraries to one thread for per-sample reference code.

Tiny per-sample problems (one image, a 784-vector) are slowed several-fold by multi-threaded BLAS
starting and syncing threads, so the scipy reference runs single-threaded. threadpoolctl is used if
installed; otherwise the OpenBLAS builds loaded in this process (numpy's and scipy's) are found in
/proc/self/maps and set through their own C entry points. Environment variables would only act on
libraries loaded after they are set, so they are the last resort (set before importing numpy).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

_OPENBLAS_SYMBOLS = (
    ("openblas_get_num_threads", "openblas_set_num_threads"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
)


def _openblas_controls() -> list[tuple[Any, Any]]:
    """(get, set) function pairs of every OpenBLAS library mapped into this process (Linux only)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return []
    paths = sorted({line.split()[-1] for line in maps.read_text().splitlines()
                    if "openblas" in line.lower() and line.split()[-1].startswith("/")})
    controls = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _OPENBLAS_SYMBOLS:
            if hasattr(lib, get_name) and hasattr(lib, set_name):
                controls.append((getattr(lib, get_name), getattr(lib, set_name)))
                break
    return controls


@contextmanager
def single_thread() -> Iterator[None]:
    """torch.set_num_threads(1) and BLAS at one thread for the duration; all restored afterwards."""
    import scipy.optimize  # noqa: F401  (load scipy's BLAS so it can be pinned)

    old_torch = torch.get_num_threads()
    torch.set_num_threads(1)
    limiter: Any = None
    saved: list[tuple[Any, int]] = []
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(1)
    except ImportError:
        for get, set_ in _openblas_controls():
            saved.append((set_, int(get())))
            set_(1)
    try:
        yield
    finally:
        torch.set_num_threads(old_torch)
        if limiter is not None:
            limiter.unregister()
        for set_, n in saved:
            set_(n)
