"""The batched L-BFGS direction as a small C kernel, compiled on first use; pure torch is the fallback.

Why: at a CPU working set of ~128 rows the two-loop recursion is the solver's largest cost. In torch it
is 4·m vector ops over the whole working set, each re-reading the history from L3 cache and each paying
Python dispatch. The kernel runs the recursion row by row instead: a row's q (3 KB) stays in L1, its
2·m history vectors are read once from L3 and again from L2, empty history slots are skipped, and rows
that need no new direction (mid line search, or finished) cost nothing. Measured on FC100-100-10, 128
rows, m = 10: see benchmarks/bench_attacks.py.

The kernel is plain C99 with no Python or torch headers: `cc` builds it in well under a second into
$BLINDSPOTS_HOME/native/ (keyed by a hash of the source and flags, written atomically, with the sha256 of
the built library recorded beside it); ctypes loads it only after that hash checks out, and a missing,
truncated or replaced library is rebuilt. Where there is no C compiler, the build fails, the tensors are not
contiguous CPU float32/float64, or BLINDSPOTS_NATIVE=0, `direction` returns None and the caller uses the
torch code, which computes the same thing (tests check the two agree).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

from ..io import home

_SOURCE = r"""
#include <math.h>
#define DIRECTION(T, NAME)                                                                                 \
void NAME(T *restrict d, T *restrict free_state, T *restrict slope, T *restrict dnorm,                    \
          const T *restrict g, const T *restrict fnew, const T *restrict S, const T *restrict Y,          \
          const T *restrict rho, const T *restrict gamma, const long long *restrict newest,               \
          const unsigned char *restrict need, long long m, long long n, long long D) {                    \
    T alpha[256];                                                                                         \
    for (long long i = 0; i < n; ++i) {                                                                   \
        if (!need[i]) continue;                                                                           \
        T *q = d + i * D, *fs = free_state + i * D;                                                       \
        const T *gi = g + i * D, *fi = fnew + i * D;                                                      \
        long long nw = newest[i];                                                                         \
        for (long long k = 0; k < D; ++k) q[k] = gi[k] * fi[k];                                           \
        for (long long t = 0; t < m; ++t) {                                                               \
            long long j = ((nw - t) % m + m) % m;                                                         \
            T r = rho[j * n + i];                                                                         \
            alpha[t] = 0;                                                                                 \
            if (r == 0) continue;                                                                         \
            const T *s = S + (j * n + i) * D, *y = Y + (j * n + i) * D;                                   \
            T acc = 0;                                                                                    \
            _Pragma("omp simd reduction(+:acc)")                                                          \
            for (long long k = 0; k < D; ++k) acc += s[k] * q[k];                                         \
            T a = r * acc;                                                                                \
            alpha[t] = a;                                                                                 \
            _Pragma("omp simd")                                                                           \
            for (long long k = 0; k < D; ++k) q[k] -= a * y[k];                                           \
        }                                                                                                 \
        T gm = gamma[i];                                                                                  \
        for (long long k = 0; k < D; ++k) q[k] *= gm;                                                     \
        for (long long t = m - 1; t >= 0; --t) {                                                          \
            long long j = ((nw - t) % m + m) % m;                                                         \
            T r = rho[j * n + i];                                                                         \
            if (r == 0) continue;                                                                         \
            const T *s = S + (j * n + i) * D, *y = Y + (j * n + i) * D;                                   \
            T acc = 0;                                                                                    \
            _Pragma("omp simd reduction(+:acc)")                                                          \
            for (long long k = 0; k < D; ++k) acc += y[k] * q[k];                                         \
            T c = alpha[t] - r * acc;                                                                     \
            _Pragma("omp simd")                                                                           \
            for (long long k = 0; k < D; ++k) q[k] += c * s[k];                                           \
        }                                                                                                 \
        T sl = 0, nn = 0;                                                                                 \
        _Pragma("omp simd reduction(+:sl,nn)")                                                            \
        for (long long k = 0; k < D; ++k) {                                                               \
            T v = -q[k] * fi[k];                                                                          \
            q[k] = v;                                                                                     \
            fs[k] = fi[k];                                                                                \
            sl += gi[k] * v;                                                                              \
            nn += v * v;                                                                                  \
        }                                                                                                 \
        slope[i] = sl;                                                                                    \
        dnorm[i] = sqrt(nn);                                                                              \
    }                                                                                                     \
}
DIRECTION(float, direction_f32)
DIRECTION(double, direction_f64)
"""

MAX_HISTORY = 256  # the kernel's alpha scratch
_state: dict[str, object] = {}


def _flags() -> list[str]:
    flags = ["-O3", "-fopenmp-simd", "-shared", "-fPIC", "-std=c99"]
    try:
        cpu = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpu = ""
    if " avx2 " in cpu and " fma " in cpu:  # key of the cached build, so a shared home stays safe
        flags += ["-mavx2", "-mfma"]
    return flags


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(target: Path, stamp: Path) -> bool:
    """The cached build is whole and ours: its sha256 matches the one recorded beside it when it was built."""
    try:
        return target.is_file() and stamp.read_text().strip() == _digest(target)
    except OSError:
        return False


def _compile(compiler: str, flags: list[str], target: Path, stamp: Path) -> bool:
    """Build into a temporary folder, then move the library and its recorded hash into place atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src, out, sha = Path(tmp) / "kernel.c", Path(tmp) / "kernel.so", Path(tmp) / "kernel.sha256"
        src.write_text(_SOURCE)
        proc = subprocess.run([compiler, *flags, str(src), "-o", str(out), "-lm"], capture_output=True,
                              text=True, timeout=120, check=False)
        if proc.returncode != 0:
            warnings.warn(f"blindspots: could not build the native L-BFGS kernel ({compiler}: "
                          f"{proc.stderr.strip()[:300]}); using the slower torch code.", stacklevel=4)
            return False
        sha.write_text(_digest(out))
        os.replace(out, target)
        os.replace(sha, stamp)  # last: a crash before this leaves an unverified build, rebuilt next time
    return True


def _build() -> ctypes.CDLL | None:
    """Load the cached kernel if its recorded hash matches, else (re)build it; None without a compiler."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    flags = _flags()
    key = hashlib.sha256((_SOURCE + " ".join(flags)).encode()).hexdigest()[:16]
    target = home() / "native" / f"lbfgs_direction_{key}.so"
    stamp = target.with_suffix(".sha256")
    # missing, truncated, replaced, or a build that never finished: rebuild
    if not _verified(target, stamp) and not _compile(compiler, flags, target, stamp):
        return None
    try:
        lib = ctypes.CDLL(str(target))
    except OSError:  # verified yet unloadable (e.g. built for another machine sharing the home): rebuild once
        if not _compile(compiler, flags, target, stamp):
            return None
        lib = ctypes.CDLL(str(target))
    for name in ("direction_f32", "direction_f64"):
        fn = getattr(lib, name)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p] * 12 + [ctypes.c_longlong] * 3
    return lib


def _library() -> ctypes.CDLL | None:
    if "lib" not in _state:
        try:
            _state["lib"] = _build()
        except (OSError, subprocess.SubprocessError) as exc:
            warnings.warn(f"blindspots: native L-BFGS kernel unavailable ({exc}); using the torch code.",
                          stacklevel=3)
            _state["lib"] = None
    lib = _state["lib"]
    return lib if isinstance(lib, ctypes.CDLL) else None


def enabled() -> bool:
    """Whether the kernel may be used in this process (BLINDSPOTS_NATIVE=0 turns it off)."""
    return os.environ.get("BLINDSPOTS_NATIVE", "1") != "0"


def direction(d: Tensor, free: Tensor, g: Tensor, free_new: Tensor, S: Tensor, Y: Tensor, rho: Tensor,
              gamma: Tensor, newest: Tensor, need: Tensor) -> tuple[Tensor, Tensor] | None:
    """For the rows where `need`: d = −free_new ⊙ H(free_new ⊙ g) in place (H from the curvature pairs
    S, Y [m, n, D] with 1/sᵀy in rho [m, n], empty slots rho = 0, scaling gamma [n], each row's newest
    slot newest [n]), free = free_new; returns (slope g·d, ‖d‖) [n] (0 elsewhere). None when not available:
    the caller then runs the torch code."""
    tensors = (d, free, g, free_new, S, Y, rho, gamma)
    if (not enabled() or d.device.type != "cpu" or d.dtype not in (torch.float32, torch.float64)
            or S.shape[0] > MAX_HISTORY or any(t.dtype != d.dtype or not t.is_contiguous() for t in tensors)):
        return None
    lib = _library()
    if lib is None:
        return None
    m, n, dim = S.shape
    newest_i64 = newest.to(torch.int64).contiguous()
    need_u8 = need.to(torch.uint8).contiguous()
    slope = torch.zeros(n, dtype=d.dtype)
    dnorm = torch.zeros(n, dtype=d.dtype)
    fn = lib.direction_f32 if d.dtype == torch.float32 else lib.direction_f64
    fn(*(t.data_ptr() for t in (d, free, slope, dnorm, g, free_new, S, Y, rho, gamma, newest_i64, need_u8)), m, n, dim)
    return slope, dnorm
