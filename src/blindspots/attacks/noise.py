"""Noise baselines and magnification: Gaussian noise of a per-pixel σ, and perturbations rescaled to a
target per-pixel standard deviation (Szegedy et al.'s Table 3 "magnified" set).

Szegedy et al. print the magnification as x + 0.1·(x' − x)/‖x' − x‖₂ but describe it as a perturbation
of standard deviation 0.1; `magnify` follows the stated intent: each perturbation is rescaled so its
per-pixel RMS (= the distortion measure) equals σ, then the image is clipped to [0, 1] (which can only
shrink it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InputError
from .base import Bounds, Prepared, Run, attack, check_images


def _per_sample(value: float | Tensor, like: Tensor, name: str) -> Tensor:
    """σ as a tensor broadcastable over images [N, ...]: a number, or one value per image."""
    n = like.shape[0]
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise InputError(f"{name} must be a number or one value per image ({n}), got shape {tuple(t.shape)}.")
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise InputError(f"{name} must be finite and >= 0.")
    return t.reshape(-1, *([1] * (like.dim() - 1)))


def _unit_noise(x: Tensor, seed: int) -> Tensor:
    """N(0, 1) of x's shape from a seeded CPU generator (the same draw on every device)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(x.shape, generator=gen, dtype=torch.float32).to(device=x.device, dtype=x.dtype)


def gaussian_noise(images: Tensor, sigma: float | Tensor, seed: int) -> Tensor:
    """clip(x + σ·N(0, 1), 0, 1) with a seeded generator; σ a number or one per image (e.g. matched to an
    attack's RMS distortion; clipping at the box makes the realised RMS smaller than σ)."""
    x = check_images(images)
    return (x + _per_sample(sigma, x, "sigma") * _unit_noise(x, seed)).clamp_(0, 1)


def magnify(x: Tensor, x_adv: Tensor, sigma: float | Tensor) -> Tensor:
    """x + r·σ/RMS(r) clipped to [0, 1], with r = x_adv − x per image; images with r = 0 are returned as x."""
    x = check_images(x, "x")
    x_adv = check_images(x_adv, "x_adv")
    if x.shape != x_adv.shape:
        raise InputError(f"x {tuple(x.shape)} and x_adv {tuple(x_adv.shape)} must have the same shape.")
    s = _per_sample(sigma, x, "sigma")
    r = x_adv - x
    rms = r.flatten(1).double().square().mean(1).sqrt().to(x.dtype).view_as(s)
    scale = torch.where(rms > 0, s / rms.clamp(min=torch.finfo(x.dtype).tiny), torch.zeros_like(s))
    return (x + r * scale).clamp_(0, 1)


@attack("gaussian-noise", budgets="sigmas")
def noise_attack(a: Prepared, *, seed: int = 0, bounds: Bounds = (0.0, 1.0)) -> Run:
    """Gaussian noise at each σ as a fixed-budget result (x_adv [K, N, ...]); the same N(0, 1) draw is
    scaled for every σ, so the K sets differ only in magnitude."""
    x = a.x
    s = torch.tensor(a.budgets, device=x.device, dtype=x.dtype).view(-1, *([1] * x.dim()))
    return Run((x.unsqueeze(0) + s * _unit_noise(x, seed).unsqueeze(0)).clamp_(*bounds))
