"""The ℓ2 operator norm of a 2-D convolution from the DFT of its kernels (Szegedy et al. 2014, §4.3).

On a periodic N_h×N_w grid a strided circular convolution decouples into one small block per output frequency η:
A(η) = (s_h s_w)^(-1/2)·[K̂(η + l·N/s)]_l, the c_out × (c_in·s_h·s_w) matrix that stacks the kernels' DFTs at the
s_h·s_w frequencies aliased onto η by the stride (the paper's ξ + l·N·Δ⁻¹; Sedghi et al. 2019 for stride 1); the
operator norm is max_η σ_max(A(η)), taken with one batched `svdvals`. Boundary handling decides whether this is
exact:
- padding_mode="circular", stride dividing the input and output size N/s: the layer *is* that operator, so the
  value is its exact operator norm (method "dft-exact").
- zero padding (PyTorch's default): the layer equals the circular operator on a larger grid M ≥ N + p (M a
  multiple of s, M/s ≥ the output size) with the input embedded in the grid and the first outputs kept, i.e. a
  restriction of it, so the DFT value on M is an upper bound ("dft-upper"). It is not exact: the exact norm of a
  zero-padded (Toeplitz) convolution has no closed DFT form. The DFT on the unpadded N×N grid, as the paper's
  formula is often applied, is *not* a valid bound for zero padding (a 1-pixel input with a 3-tap kernel
  [1, 1, −2] has norm 1 but circular norm 0), which is why the larger grid is used.
- other padding modes (reflect, replicate, circular with sizes that do not divide): the padding map P repeats
  input pixels, ‖P‖ = √(largest number of copies of one pixel), times the bound of the unpadded convolution on
  the padded input ("dft-upper").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InputError

_CONV_GRID_LIMIT = 4096  # largest periodic grid side the DFT bound will build


def _dense_kernel(conv: nn.Conv2d) -> torch.Tensor:
    """The conv's weight as a dense [c_out, c_in, kh, kw] float64 kernel with groups and dilation expanded."""
    w = conv.weight.detach().to("cpu", torch.float64)
    c_out, c_in_g, kh, kw = w.shape
    g = conv.groups
    if g > 1:
        dense = w.new_zeros(c_out, c_in_g * g, kh, kw)
        per = c_out // g
        for i in range(g):
            dense[i * per:(i + 1) * per, i * c_in_g:(i + 1) * c_in_g] = w[i * per:(i + 1) * per]
        w = dense
    dh, dw = conv.dilation
    if dh > 1 or dw > 1:
        dil = w.new_zeros(w.shape[0], w.shape[1], dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        dil[:, :, ::dh, ::dw] = w
        w = dil
    return w


def _paddings(conv: nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int]]:
    """(left, right) padding per spatial axis, as the layer applies it (asymmetric for padding='same')."""
    kh, kw = conv.kernel_size
    dh, dw = conv.dilation
    if conv.padding == "valid":
        return (0, 0), (0, 0)
    if conv.padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        return (th // 2, th - th // 2), (tw // 2, tw - tw // 2)
    ph, pw = conv.padding
    return (ph, ph), (pw, pw)


def _alias_norm(kernel: torch.Tensor, grid: tuple[int, int], stride: tuple[int, int],
                offset: tuple[int, int]) -> float:
    """Exact operator norm of the strided circular convolution y[i] = Σ_a w[a] x[(s·i + a − offset) mod M]
    on an M_h×M_w periodic grid (s divides M), via batched SVDs of the aliased DFT blocks."""
    (mh, mw), (sh, sw), (oh, ow) = grid, stride, offset
    c_out, c_in, kh, kw = kernel.shape
    qh, qw = mh // sh, mw // sw

    def phases(m: int, k: int, o: int) -> torch.Tensor:  # [m, k]: exp(2πi ξ (a − o) / m)
        xi = torch.arange(m, dtype=torch.float64)[:, None]
        a = torch.arange(k, dtype=torch.float64)[None, :] - o
        return torch.polar(torch.ones(m, k, dtype=torch.float64), 2 * math.pi * xi * a / m)

    eh, ew = phases(mh, kh, oh), phases(mw, kw, ow)
    kc = kernel.to(torch.complex128)
    # frequency ξ_h = l·q_h + η_h; chunk over η_h to keep the blocks small for wide layers.
    per_row = c_out * c_in * sh * sw * qw * 16
    chunk = max(1, min(qh, (256 << 20) // max(per_row, 1)))
    best = 0.0
    for start in range(0, qh, chunk):
        eta = torch.arange(start, min(qh, start + chunk))
        rows = (torch.arange(sh)[:, None] * qh + eta[None, :]).reshape(-1)  # [sh·len(eta)], l-major
        k_hat = torch.einsum("xa,ocab,yb->xyoc", eh[rows], kc, ew)  # [sh·n, mw, c_out, c_in]
        n = eta.numel()
        blocks = (k_hat.reshape(sh, n, sw, qw, c_out, c_in)
                  .permute(1, 3, 4, 0, 2, 5).reshape(n * qw, c_out, sh * sw * c_in))
        best = max(best, float(torch.linalg.svdvals(blocks).amax()))
    return best / math.sqrt(sh * sw)


def _pad_index(n: int, left: int, right: int, mode: str) -> list[int]:
    """Which input position each padded position copies, for PyTorch's reflect/replicate/circular padding."""
    out = []
    for j in range(-left, n + right):
        if mode == "circular":
            out.append(j % n)
        elif mode == "replicate":
            out.append(min(max(j, 0), n - 1))
        else:  # reflect
            out.append(-j if j < 0 else (2 * (n - 1) - j if j >= n else j))
    return out


def _grid(n: int, left: int, right: int, out: int, s: int) -> int:
    """Smallest periodic grid (multiple of s) on which a zero-padded conv is a restriction of a circular one."""
    m = max(n + max(left, right), s * out)
    m = s * math.ceil(m / s)
    if m > _CONV_GRID_LIMIT:
        raise InputError(f"input side {n} is too large for the DFT conv bound (grid {m} > {_CONV_GRID_LIMIT})")
    return m


def _conv_norm(conv: nn.Conv2d, input_hw: tuple[int, int]) -> tuple[float, str, bool]:
    kernel = _dense_kernel(conv)
    (h, w), (sh, sw) = input_hw, conv.stride
    (plh, prh), (plw, prw) = _paddings(conv)
    kh, kw = kernel.shape[-2:]
    oh, ow = (h + plh + prh - kh) // sh + 1, (w + plw + prw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise InputError(f"a {kh}x{kw} conv with padding ({plh},{plw}) cannot run on a {h}x{w} input")
    mode = conv.padding_mode
    no_pad = plh == prh == plw == prw == 0
    if mode == "zeros" or no_pad:
        mh, mw = _grid(h, plh, prh, oh, sh), _grid(w, plw, prw, ow, sw)
        # without padding, windows no wider than the stride that tile the input never wrap: exact
        exact = no_pad and (mh, mw) == (h, w) and (oh * sh, ow * sw) == (h, w)
        value = _alias_norm(kernel, (mh, mw), (sh, sw), (plh, plw))
        if exact:
            return value, f"dft-exact on {mh}x{mw} (no padding, windows tile the input)", True
        what = "zero padding" if not no_pad else "no padding"
        return value, f"dft-upper on {mh}x{mw} periodic grid ({what}, input embedded)", False
    if mode == "circular" and h % sh == 0 and w % sw == 0 and oh <= h // sh and ow <= w // sw:
        # output i reads x[(s·i + a − p) mod N]: row i of the strided circular conv on the layer's own grid
        value = _alias_norm(kernel, (h, w), (sh, sw), (plh, plw))
        if (oh, ow) == (h // sh, w // sw):
            return value, f"dft-exact on {h}x{w} (circular padding)", True
        return value, f"dft-upper on {h}x{w} (circular; keeps {oh}x{ow} of {h // sh}x{w // sw} outputs)", False
    # reflect / replicate / other circular: ‖P‖ · bound of the unpadded conv on the padded input
    counts = []
    for n, left, right in ((h, plh, prh), (w, plw, prw)):
        idx = _pad_index(n, left, right, mode)
        counts.append(max(idx.count(i) for i in range(n)))
    ph, pw = h + plh + prh, w + plw + prw
    mh, mw = _grid(ph, 0, 0, oh, sh), _grid(pw, 0, 0, ow, sw)
    value = _alias_norm(kernel, (mh, mw), (sh, sw), (0, 0)) * math.sqrt(counts[0] * counts[1])
    return value, f"dft-upper on {mh}x{mw} x sqrt({counts[0]}*{counts[1]}) ({mode} padding copies pixels)", False


def conv2d_operator_norm(conv: nn.Conv2d, input_hw: tuple[int, int]) -> float:
    """ℓ2 operator-norm bound of the linear part of `conv` on inputs of spatial size `input_hw` (DFT method).

    Exact for circular padding with a stride that divides the input; an upper bound for zero and other padding
    (see the module docstring for how boundary and stride are handled)."""
    if not isinstance(conv, nn.Conv2d):
        raise InputError(f"conv2d_operator_norm takes an nn.Conv2d, got {type(conv).__name__}")
    return _conv_norm(conv, (int(input_hw[0]), int(input_hw[1])))[0]


__all__ = ["conv2d_operator_norm"]
