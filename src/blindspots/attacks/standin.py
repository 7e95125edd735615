"""Differentiable stand-ins for the parts of a model without a usable gradient (BPDA's approximation, Athalye et al.
2018 §4.1) where the identity cannot serve because the shape changes, e.g. a thermometer encoding 1×28×28 →
L×28×28: a small per-position network from the part's input channels to its output channels, fitted by regression
on the audit's images and noisy copies of them, with its fit measured on held-out images."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .base import attack_mode

HIDDEN, STEPS, BATCH = 32, 400, 4096


class PerPosition(nn.Module):
    """An MLP applied at every position: channels (dim 1) in, channels out; `elementwise`: every element alone."""

    def __init__(self, c_in: int, c_out: int, elementwise: bool = False, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.elementwise = elementwise
        self.net = nn.Sequential(nn.Linear(c_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, c_out))

    def forward(self, x: Tensor) -> Tensor:
        if self.elementwise:
            return self.net(x.reshape(-1, 1)).reshape(x.shape)
        return self.net(x.movedim(1, -1)).movedim(-1, 1)


def per_position(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> str | None:
    """How a per-position stand-in maps these shapes (per image): "elements" (same shape), "channels" (same
    positions, channels may differ), or None (it cannot)."""
    if tuple(in_shape) == tuple(out_shape):
        return "elements"
    if len(in_shape) >= 2 and len(in_shape) == len(out_shape) and tuple(in_shape[1:]) == tuple(out_shape[1:]):
        return "channels"
    return None


def _rows(t: Tensor, how: str) -> Tensor:
    return t.reshape(-1, 1) if how == "elements" else t.movedim(1, -1).reshape(-1, t.shape[1])


def fit(inputs: Tensor, outputs: Tensor, *, seed: int = 0, steps: int = STEPS) -> PerPosition:
    """A PerPosition network fitted (Adam, mean squared error) to map `inputs` [N, ...] to `outputs` [N, ...]."""
    how = per_position(tuple(inputs.shape[1:]), tuple(outputs.shape[1:]))
    if how is None:
        raise ValueError(f"no per-position stand-in maps {tuple(inputs.shape[1:])} to {tuple(outputs.shape[1:])}")
    xr, yr = _rows(inputs.float(), how), _rows(outputs.float(), how)
    torch.manual_seed(seed)
    net = PerPosition(xr.shape[1], yr.shape[1], elementwise=how == "elements").to(inputs.device)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        for _ in range(steps):
            b = torch.randint(xr.shape[0], (min(BATCH, xr.shape[0]),), generator=gen).to(xr.device)
            opt.zero_grad()
            nn.functional.mse_loss(net.net(xr[b]), yr[b]).backward()
            opt.step()
            sched.step()
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


@contextmanager
def _tap(model: nn.Module, layer: str | None, cut: bool, x: list[Tensor],
         replace: nn.Module | None = None) -> Iterator[list[tuple[Tensor, Tensor]]]:
    """While active, each forward call records (source, target) of a part of the model: a layer's (input, output),
    or with `cut` the model's input (x[0], set by the caller) and `layer`'s input; `replace` substitutes the
    stand-in's output for the part's."""
    seen: list[tuple[Tensor, Tensor]] = []
    module = dict(model.named_modules())[layer] if layer is not None else None

    def post(_m: nn.Module, inp: Any, out: Tensor) -> Tensor | None:
        seen.append((inp[0].detach(), out.detach()))
        return replace(inp[0]).reshape(out.shape) if replace is not None else None

    def pre(_m: nn.Module, inp: Any) -> Any:
        seen.append((x[0].detach(), inp[0].detach()))
        return (replace(x[0]).reshape(inp[0].shape), *inp[1:]) if replace is not None else None

    h = module.register_forward_pre_hook(pre) if cut else module.register_forward_hook(post)
    try:
        yield seen
    finally:
        h.remove()


def fit_part(model: nn.Module, layer: str, images: Tensor, *, cut: bool = False, seed: int = 0,
             bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[PerPosition | None, dict[str, Any]]:
    """A stand-in for `layer` (from its input to its output) or, with `cut`, for the forward code before it (from
    the model's input to the layer's input), fitted on the first 80% of `images` and noisy copies (uniform ±10%
    and ±30% of the range) and measured on the rest: R² of its outputs and the share of the model's labels it
    keeps when it replaces the part. (None, why) when no per-position network can map the shapes."""
    lo, hi = bounds
    gen = torch.Generator().manual_seed(seed)
    noisy = [images] + [(images + (torch.rand(images.shape, generator=gen).to(images) * 2 - 1) * s * (hi - lo))
                        .clamp(lo, hi) for s in (0.1, 0.3)]
    k = max(1, int(round(images.shape[0] * 0.8))) if images.shape[0] > 1 else 1
    train_x = torch.cat([v[:k] for v in noisy])
    held_x = torch.cat([v[k:] for v in noisy]) if images.shape[0] > k else train_x
    holder: list[Tensor] = [train_x]
    with attack_mode(model) as m, torch.no_grad():
        with _tap(m, layer, cut, holder) as seen:
            z_train = m(train_x)
        src, tgt = seen[0]
        how = per_position(tuple(src.shape[1:]), tuple(tgt.shape[1:]))
        if how is None:
            return None, {"fitted": False, "why": f"maps {tuple(src.shape[1:])} to {tuple(tgt.shape[1:])}, which no "
                                                  "per-position network can (not the same positions)"}
        net = fit(src, tgt, seed=seed)
        holder[0] = held_x
        with _tap(m, layer, cut, holder) as seen:
            z_real = m(held_x)
        src, tgt = seen[0]
        with _tap(m, layer, cut, holder, replace=net):
            z_stand = m(held_x)
        pred = net(src).reshape(tgt.shape).double()
        var = float(tgt.double().var())
        r2 = 1 - float(((pred - tgt.double()) ** 2).mean()) / var if var > 0 else float("nan")
        agree = float((z_stand.argmax(1) == z_real.argmax(1)).double().mean())
    del z_train
    return net, {"fitted": True, "kind": f"per-position MLP ({how}, {HIDDEN} hidden units ×2, tanh)",
                 "maps": [list(src.shape[1:]), list(tgt.shape[1:])], "train_inputs": int(train_x.shape[0]),
                 "held_out_inputs": int(held_x.shape[0]), "r2": round(r2, 4), "label_agreement": round(agree, 4)}


def part_shapes(model: nn.Module, layer: str, images: Tensor, *, cut: bool = False) -> tuple[tuple[int, ...], ...]:
    """(source shape, target shape) per image of a part as fit_part defines it, from one forward pass."""
    holder = [images[:2]]
    with attack_mode(model) as m, torch.no_grad(), _tap(m, layer, cut, holder) as seen:
        m(holder[0])
    src, tgt = seen[0]
    return tuple(src.shape[1:]), tuple(tgt.shape[1:])


__all__ = ["PerPosition", "per_position", "fit", "fit_part", "part_shapes"]
