"""Adversarial training (Goodfellow, Shlens & Szegedy 2015, section 6) and its noise controls.

The training objective is J̃(θ, x, y) = α·J(θ, x, y) + (1 − α)·J(θ, x + δ, y), with
- δ = ε·sign(∇ₓJ(θ, x, y))      "fgsm": the paper's adversarial training;
- δ = ε·s, s uniform in {−1, +1} "sign_noise": the paper's first control (±ε per pixel);
- δ ~ U(−ε, ε) per pixel         "uniform_noise": the paper's second control.

Choices the paper leaves open, fixed here and recorded in each checkpoint: x + δ is clipped to the pixel
box [0, 1] (the attacks are evaluated in that box too; `clip=False` leaves it outside, for the ablation);
∇ₓJ is taken through the clean term's own forward pass in training mode, i.e. with its dropout masks (J is
the dropout training cost; the adversarial term then draws fresh masks), and is recomputed at every minibatch
from the current weights.

Use it through the store: `train("MAXOUT", objective=Objective("fgsm", epsilon=0.25, alpha=0.5))`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SpecError

PERTURBATIONS = ("fgsm", "sign_noise", "uniform_noise")
GRADIENTS = ("dropout", "clean")
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Objective:
    """J̃ = α·J(x) + (1 − α)·J(x + δ) with δ given by `perturbation` at L∞ size `epsilon`."""

    perturbation: str = "fgsm"
    epsilon: float = 0.25
    alpha: float = 0.5
    # "dropout": ∇ₓJ through the clean term's own training-mode pass (its dropout masks); "clean": ∇ₓJ of the
    # deterministic (eval-mode, no dropout) net, as the attack at test time sees it (one extra forward+backward)
    gradient: str = "dropout"
    # x + δ clipped to the pixel box [0, 1] (the default, as the attacks are evaluated there) or left outside it
    # (a choice the paper leaves open; the §6 ablation compares the two)
    clip: bool = True

    def __post_init__(self) -> None:
        if self.perturbation not in PERTURBATIONS:
            raise SpecError(f"unknown training perturbation {self.perturbation!r}; choose one of "
                            f"{', '.join(PERTURBATIONS)}.")
        if not 0 <= self.epsilon <= 1:
            raise SpecError(f"epsilon must lie in [0, 1] (pixels are in [0, 1]), got {self.epsilon}.")
        if self.gradient not in GRADIENTS:
            raise SpecError(f"unknown gradient mode {self.gradient!r}; choose one of {', '.join(GRADIENTS)}.")
        if not 0 <= self.alpha < 1:
            raise SpecError(f"alpha must lie in [0, 1) (alpha = 1 is plain training), got {self.alpha}.")

    @property
    def slug(self) -> str:
        """File-name-safe tag without dots (a checkpoint stem gets suffixes): fgsm-e0p25-a0p5."""
        tag = ("" if self.gradient == "dropout" else f"-g{self.gradient}") + ("" if self.clip else "-noclip")
        return f"{self.perturbation.replace('_', '')}-e{self.epsilon:g}-a{self.alpha:g}{tag}".replace(".", "p")

    def describe(self) -> str:
        delta = {"fgsm": "ε·sign(∇ₓJ) (FGSM)", "sign_noise": "±ε sign noise",
                 "uniform_noise": "U(−ε, ε) noise"}[self.perturbation]
        grad = "" if self.perturbation != "fgsm" else (
            ", ∇ₓJ with the clean term's dropout masks" if self.gradient == "dropout" else ", ∇ₓJ without dropout")
        box = "x + δ clipped to [0, 1]" if self.clip else "x + δ not clipped"
        return f"J̃ = {self.alpha:g}·J(x) + {1 - self.alpha:g}·J(x + δ), δ = {delta}, ε = {self.epsilon:g}, {box}{grad}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.gradient == "dropout":  # the defaults (added later) stay out: stored checkpoint names unchanged
            del d["gradient"]
        if self.clip:
            del d["clip"]
        return d

    def box(self, x: Tensor) -> Tensor:
        """x + δ as trained on: clipped to [0, 1], or as it is when `clip` is off."""
        return x.clamp(0, 1) if self.clip else x

    def noise(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """δ of a noise control, drawn on the CPU from `gen` (so runs are reproducible on any device)."""
        if self.perturbation == "sign_noise":
            s = torch.randint(0, 2, x.shape, generator=gen).to(x.dtype) * 2 - 1
        elif self.perturbation == "uniform_noise":
            s = torch.rand(x.shape, generator=gen, dtype=x.dtype) * 2 - 1
        else:
            raise SpecError("fgsm has no noise: its δ comes from the gradient.")
        return (self.epsilon * s).to(x.device)

    def value(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, gen: torch.Generator) -> Tensor:
        """J̃ on one batch, as `loss` would train on it (the model's mode as it is), with no parameter gradients:
        the monitored objective of the maxout protocol (pylearn2's train_objective / valid_objective)."""
        if self.perturbation != "fgsm":
            with torch.no_grad():
                x_pert = self.box(x + self.noise(x, gen))
                return self.alpha * loss_fn(model(x), y) + (1 - self.alpha) * loss_fn(model(x_pert), y)
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            if self.gradient == "clean":
                model_mode = model.training
                model.eval()
                try:
                    (grad,) = torch.autograd.grad(loss_fn(model(xg), y), xg)
                finally:
                    model.train(model_mode)
                with torch.no_grad():
                    clean = loss_fn(model(x), y)
            else:
                clean_t = loss_fn(model(xg), y)
                (grad,) = torch.autograd.grad(clean_t, xg)
                clean = clean_t.detach()
        with torch.no_grad():
            x_pert = self.box(x + self.epsilon * grad.sign())
            return self.alpha * clean + (1 - self.alpha) * loss_fn(model(x_pert), y)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, gen: torch.Generator) -> Tensor:
        """The part of J̃ still to back-propagate for one minibatch; the caller adds any weight decay.

        For "fgsm" the clean term α·J(x) is back-propagated here, so that one backward pass gives both its
        parameter gradients and ∇ₓJ (they accumulate in .grad: zero the gradients *before* calling this);
        the returned tensor is the adversarial term (1 − α)·J(x + δ). This costs about 2× a plain step
        instead of 3× for a separate input-gradient pass. For the noise controls both terms are returned.
        """
        if self.perturbation == "fgsm" and self.gradient == "clean":
            xg = x.detach().requires_grad_(True)
            model.eval()
            try:
                (grad,) = torch.autograd.grad(loss_fn(model(xg), y), xg)
            finally:
                model.train()
            x_pert = self.box(x.detach() + self.epsilon * grad.sign())
            out = model(torch.cat([x, x_pert]))
            n = x.shape[0]
            return self.alpha * loss_fn(out[:n], y) + (1 - self.alpha) * loss_fn(out[n:], y)
        if self.perturbation == "fgsm":
            x = x.detach().requires_grad_(True)
            clean = loss_fn(model(x), y)
            if self.alpha > 0:
                (self.alpha * clean).backward()
                grad = x.grad
            else:  # no clean term to train on: take ∇ₓJ alone
                (grad,) = torch.autograd.grad(clean, x)
            assert grad is not None
            x_pert = self.box(x.detach() + self.epsilon * grad.sign())
            return (1 - self.alpha) * loss_fn(model(x_pert), y)
        x_pert = self.box(x + self.noise(x, gen))
        out = model(torch.cat([x, x_pert]))  # one pass over both halves (independent dropout masks)
        n = x.shape[0]
        return self.alpha * loss_fn(out[:n], y) + (1 - self.alpha) * loss_fn(out[n:], y)


__all__ = ["Objective", "PERTURBATIONS", "GRADIENTS"]
