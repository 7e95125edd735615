"""Adaptive attacks from what the gradient probe found (Tramèr et al. 2020): straight-through gradients (BPDA)
through rounding calls and layers without a usable gradient, a fitted differentiable stand-in where such a part
changes the shape (or --bpda names it), EOT for a model with random outputs, and, where no gradient can be
had at all, the gradient-free mode (the gradient stages stand down; Square runs at every ε)."""

from __future__ import annotations

from typing import Any

import torch

from ..attacks.bpda import INPUT, OUTPUT, StraightThrough, gradient_probe
from ..attacks.standin import fit_part, part_shapes, per_position
from .common import Ctx

FIT_IMAGES = 200  # images (and two noisy copies of each) a stand-in is fitted and measured on


def _parts(ctx: Ctx, probe: dict[str, Any], named: list[str]) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """Layers to pass straight through (same shape), stand-ins per layer (shape changes, or named with --bpda),
    and the forward-code cuts: {cut: stand-in or None (identity)}; plus what the report says of each."""
    model, x, cfg = ctx.model.module, ctx.x[:FIT_IMAGES], ctx.config
    shapes = probe.get("layer_shapes", {})
    identity = [n for n in probe.get("zero_layers", []) if n not in named and n in shapes
                and per_position(*shapes[n]) == "elements"]
    standins: dict[str, Any] = {}
    report: dict[str, Any] = {n: {"approximation": "identity (straight-through)", "maps": shapes[n]} for n in identity}
    for name in named + [n for n in probe.get("zero_layers", []) if n not in named and n not in identity]:
        net, info = fit_part(model, name, x, seed=cfg.seed, bounds=cfg.bounds)
        report[name] = {"approximation": "fitted stand-in" if net is not None else "none", **info}
        if net is not None:
            standins[name] = net
    cuts: dict[str, Any] = {}
    if probe.get("unavailable") and probe.get("cut") and not probe.get("zero_layers"):
        name = probe["cut"]
        src, tgt = part_shapes(model, name, x, cut=True)
        key = INPUT.format(name)
        if src == tgt or (len(tgt) == 1 and tgt[0] == x[0].numel()):
            cuts[key] = None
            report[key] = {"approximation": "identity (straight-through) from the model's input",
                           "maps": [list(src), list(tgt)]}
        else:
            net, info = fit_part(model, name, x, cut=True, seed=cfg.seed, bounds=cfg.bounds)
            report[key] = {"approximation": "fitted stand-in" if net is not None else "none", **info}
            if net is not None:
                cuts[key] = net
    elif probe.get("unavailable") and probe.get("last"):
        src, tgt = part_shapes(model, probe["last"], x)
        out_shape = tuple(ctx.model.module(x[:2]).shape[1:])
        if tgt == out_shape:
            cuts[OUTPUT] = None
            report[OUTPUT] = {"approximation": f"identity (straight-through) from the output of {probe['last']}",
                              "maps": [list(tgt), list(out_shape)]}
    return identity, standins, {"cuts": cuts, "report": report}


def adapt(ctx: Ctx, clean: dict[str, Any]) -> None:
    """Sets ctx.attacked (the model with BPDA where the probe found masking or no gradient, or --bpda names
    layers), ctx.eot (`eot_samples` draws for random outputs), ctx.gradient_free (why gradient attacks cannot run,
    or None) and ctx.adaptive (what was done, for the stage keys and the report). Re-probes through the BPDA
    module: when its gradients are still unusable, the audit is gradient-free."""
    probe = clean.get("gradients") or {}
    prefix = "model." if ctx.model.module is not ctx.model.inner else ""
    named = [prefix + n for n in ctx.config.bpda]
    masked = bool(probe.get("masked"))
    identity, standins, parts = _parts(ctx, probe, named) if probe else ([], {}, {"cuts": {}, "report": {}})
    cuts = parts["cuts"]
    bpda = masked or identity or standins or cuts
    ctx.attacked = StraightThrough(ctx.model.module, identity, functions=masked, standins=standins, cuts=cuts,
                                   last=probe.get("last") if cuts else None) if bpda else None
    ctx.eot = 1 if clean["output"].get("deterministic", True) else ctx.config.effort.eot_samples
    why = probe.get("unavailable")
    after = None
    if why and ctx.attacked is not None and clean.get("probe_rows"):
        pick = clean["probe_rows"]
        again = gradient_probe(ctx.attacked, ctx.x[pick], ctx.crit(pick), noise=0.05 * ctx.config.span,
                               seed=ctx.config.seed, bounds=ctx.config.bounds)
        after = again["unavailable"]
    ctx.gradient_free = (f"input gradients unavailable: {why}" + ("" if after is None else
                         f"; through the BPDA approximations still: {after}")) if why and (after or ctx.attacked is None) \
        else None
    ctx.adaptive = {"bpda": ctx.attacked is not None, "bpda_layers": identity, "bpda_rounding_calls": masked,
                    "approximated": parts["report"], "eot": ctx.eot, "gradient_free": ctx.gradient_free,
                    "gradients": "unavailable" if ctx.gradient_free else "through BPDA" if why else "model's own"}




def eot_pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, steps: int, eot: int,
            bounds: tuple[float, float]) -> torch.Tensor:
    """PGD on the margin loss averaged over `eot` draws of a random model, fixed step 2.5ε/steps, the last iterate:
    for a random model beside APGD with EOT, whose step-size halving reads a noisy loss and whose example is the
    first iterate adversarial on the draws it saw (often barely across the boundary). Returns the examples."""
    from ..attacks.base import attack_mode

    view = (-1, *([1] * (x.dim() - 1)))
    delta = torch.zeros_like(x)
    with attack_mode(model) as m:
        for _ in range(steps):
            d = delta.clone().requires_grad_(True)
            with torch.enable_grad():
                loss = torch.zeros((), device=x.device)
                for _ in range(eot):
                    z = m((x + d).clamp(*bounds))
                    own = z.gather(1, y.view(-1, 1))[:, 0]
                    loss = loss + (own - z.scatter(1, y.view(-1, 1), -torch.inf).amax(1)).sum()
                (g,) = torch.autograd.grad(loss, d)
            if norm == "linf":
                delta = (delta - 2.5 * eps / steps * g.sign()).clamp(-eps, eps)
            else:
                g = g / g.flatten(1).norm(dim=1).clamp(min=1e-12).view(view)
                delta = delta - 2.5 * eps / steps * g
                delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp(min=1e-12)).clamp(max=1).view(view)
            delta = (x + delta).clamp(*bounds) - x
    return (x + delta).detach()


__all__ = ["adapt", "eot_pgd"]
