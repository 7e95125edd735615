"""Pin torch and the BLAS libraries to one thread for per-sample reference code.

Tiny per-sample problems (one image, a 784-vector) are slowed several-fold by multi-threaded BLAS
starting and syncing threads, so the scipy reference runs single-threaded: torch through
torch.set_num_threads, the BLAS libraries numpy and scipy loaded through threadpoolctl.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits


@contextmanager
def single_thread() -> Iterator[None]:
    """torch and every loaded BLAS at one thread for the duration; all restored afterwards."""
    import scipy.optimize  # noqa: F401  (load scipy's BLAS first, so it is limited too)

    old_torch = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(old_torch)
