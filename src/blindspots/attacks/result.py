"""What every attack returns: an AttackResult, with one shape rule.

Shape rule: x, labels, targets and clean_error are [N] (x: [N, ...]); every per-image outcome (success,
pred, confidence, rms, l2, linf) is [*B, N] and x_adv is [*B, N, ...], where B = () for a minimal attack
(one x_adv per image) and B = (K,) for a fixed-budget attack run at K budgets (`budgets`).

`success` always comes from a fresh forward pass of the model on the final x_adv. `clean_error` flags the
images the model already gets wrong before any attack (clean prediction ≠ label, or, with no label
known, the clean image already meets the criterion): they are counted in `summary()` and left out of its
distortion statistics. `rms` is Szegedy et al.'s per-pixel RMS change sqrt(Σ(x' − x)² / n).
`n_forward` and `n_backward` count the images the attack itself passed forward and backward through the model
(adv_lib's cost measure, comparable across machines where a wall time is not); `passes_per_image()` divides
them by N.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from .criteria import Criterion

NORMS = ("rms", "l2", "linf")


@dataclass
class AttackResult:
    """One attack's outcome; see the module docstring for the shape rule."""

    x: Tensor
    x_adv: Tensor
    success: Tensor
    labels: Tensor
    targets: Tensor
    pred: Tensor
    confidence: Tensor
    rms: Tensor
    l2: Tensor
    linf: Tensor
    budgets: tuple[float, ...] | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    attack: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    wall_time: float = 0.0
    clean_error: Tensor | None = None  # [N]; None only for results assembled by hand (read as "none")
    bounds: tuple[float, float] = (0.0, 1.0)
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # for `at`: a fresh re-check
    criterion: Criterion | None = field(default=None, repr=False, compare=False)
    n_forward: int = 0  # images the attack passed forward through the model (a batch of B counts B)
    n_backward: int = 0  # ... and backward (each gradient that reaches the logits); 0 when not counted

    def __post_init__(self) -> None:
        if self.clean_error is None:
            self.clean_error = torch.zeros(self.x.shape[0], dtype=torch.bool, device=self.x.device)

    @property
    def success_rate(self) -> Tensor:
        """Share of successful samples: a 0-d tensor (minimal attack) or one value per budget [K]."""
        return self.success.float().mean(dim=-1)

    def passes_per_image(self) -> tuple[float, float]:
        """(forward, backward) passes of the model per image: the attack's cost independent of the machine."""
        n = self.x.shape[0]
        return self.n_forward / n, self.n_backward / n

    @property
    def is_fixed_budget(self) -> bool:
        return self.x_adv.dim() > self.x.dim()

    def error_rate(self) -> Tensor:
        """Share of samples whose adversarial prediction differs from the true label (Goodfellow's error
        rate; counts clean errors too). NaN where labels are unknown (−1)."""
        known = self.labels >= 0
        if not bool(known.any()):
            return torch.full(self.success.shape[:-1], float("nan"))
        return (self.pred[..., known] != self.labels[known].to(self.pred.device)).float().mean(dim=-1)

    def mean_wrong_confidence(self) -> Tensor:
        """Mean softmax confidence of the predicted class over misclassified samples (NaN when none)."""
        wrong = self.pred != self.labels.to(self.pred.device)
        wrong &= (self.labels >= 0).to(self.pred.device)
        total = (self.confidence * wrong).sum(dim=-1)
        count = wrong.sum(dim=-1)
        return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))

    def measure(self, norm: str = "rms") -> Tensor:
        """The perturbation size per sample in one of NORMS."""
        if norm not in NORMS:
            raise InputError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}.")
        return {"rms": self.rms, "l2": self.l2, "linf": self.linf}[norm]

    def within(self, budgets: Sequence[float] | float, norm: str = "rms") -> Tensor:
        """[K, N]: whether each perturbation's size is <= each budget (exact comparison)."""
        b = check_budgets(budgets)
        return self.measure(norm).unsqueeze(0) <= torch.tensor(b, device=self.rms.device).unsqueeze(1)

    def at(self, budgets: Sequence[float] | float, norm: str = "rms") -> tuple[Tensor, Tensor]:
        """A minimal result at K budgets: (x_clipped [K, N, ...], success [K, N]).

        Each perturbation larger than a budget is projected onto it (scaled down for rms/l2, clipped
        per pixel for linf; inside the bounds either way), one within it is kept as is; success comes from
        a fresh forward pass of the model on x_clipped. One minimal run gives a whole success-vs-budget curve.
        """
        if self.is_fixed_budget:
            raise InputError(f"{self.attack} is a fixed-budget result (budgets {self.budgets}); `at` needs a "
                             f"minimal attack such as lbfgs, deepfool or cw.")
        if self.model is None or self.criterion is None:
            raise InputError("this result holds no model (assembled by hand or loaded from disk); re-run the "
                             "attack, or recheck(model, x, criterion, per_budget=True) your own clipped images.")
        from .base import recheck  # base builds results: imported here to keep the modules acyclic

        b = torch.tensor(check_budgets(budgets), device=self.x.device, dtype=self.x.dtype)
        view = (-1, *([1] * self.x.dim()))
        r = (self.x_adv - self.x).unsqueeze(0)
        within = self.within(budgets, norm).view(-1, self.x.shape[0], *([1] * (self.x.dim() - 1)))
        if norm == "linf":
            moved = self.x + torch.minimum(torch.maximum(r, -b.view(view)), b.view(view))
        else:
            size = self.measure(norm).to(self.x.dtype).unsqueeze(0)
            scale = (b.unsqueeze(1) / size.clamp(min=torch.finfo(self.x.dtype).tiny)).clamp(max=1)
            moved = self.x + r * scale.view(*scale.shape, *([1] * (self.x.dim() - 1)))
        x_clipped = torch.where(within, self.x_adv.unsqueeze(0), moved.clamp(*self.bounds))
        return x_clipped, recheck(self.model, x_clipped, self.criterion, per_budget=True)[0]

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers: success rate, error rate (pred ≠ label, clean errors included), clean errors,
        mean wrong-label confidence, mean and median RMS distortion over the successful samples that were
        not clean errors, wall time. For a fixed-budget result each number is a list over the budgets."""
        assert self.clean_error is not None
        attacked = ~self.clean_error.cpu()

        def stats(k: int | None) -> dict[str, float]:
            pick = (lambda t: t) if k is None else (lambda t: t[k])
            ok = pick(self.success).cpu()
            dist = pick(self.rms).cpu()[ok & attacked].double()
            return {"success_rate": float(ok.float().mean()),
                    "success_rate_attacked": float(ok[attacked].float().mean()) if bool(attacked.any()) else math.nan,
                    "error_rate": float(pick(self.error_rate())),
                    "mean_wrong_confidence": float(pick(self.mean_wrong_confidence())),
                    "mean_distortion": float(dist.mean()) if dist.numel() else math.nan,
                    "median_distortion": float(dist.median()) if dist.numel() else math.nan}

        out: dict[str, Any] = {"attack": self.attack, "n": int(self.x.shape[0]), "wall_time_s": self.wall_time,
                               "clean_errors": int((~attacked).sum()),
                               "distortion_measure": "RMS = sqrt(sum((x' - x)^2) / n_pixels), successes that "
                                                     "were not clean errors"}
        if self.is_fixed_budget:
            per = [stats(k) for k in range(self.success.shape[0])]
            out["budgets"] = list(self.budgets or ())
            out.update({key: [p[key] for p in per] for key in per[0]})
        else:
            out.update(stats(None))
        return out

    def to_tensors(self) -> dict[str, Tensor]:
        """Flat tensors for saving: x, x_adv, label, target (−1 untargeted), success, distortion (RMS), pred,
        clean_error, plus confidence, l2, linf, budgets (fixed-budget only) and extras as `extra.<name>`."""
        out = {"x": self.x, "x_adv": self.x_adv, "label": self.labels, "target": self.targets,
               "success": self.success, "distortion": self.rms, "pred": self.pred, "clean_error": self.clean_error,
               "confidence": self.confidence, "l2": self.l2, "linf": self.linf}
        if self.budgets is not None:
            out["budgets"] = torch.tensor(self.budgets, dtype=torch.float64)
        out.update({f"extra.{k}": v for k, v in self.extras.items()})
        return {k: v.detach().cpu().contiguous() for k, v in out.items() if v is not None}


def check_budgets(budgets: Sequence[float] | float, name: str = "budgets") -> tuple[float, ...]:
    """Validated list of non-negative finite budgets (ε or σ)."""
    if isinstance(budgets, (int, float)):
        budgets = [budgets]
    try:
        values = tuple(float(b) for b in budgets)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a list of numbers, got {budgets!r}.") from None
    if not values:
        raise InputError(f"{name} is empty; pass at least one value, e.g. [0.1, 0.25].")
    if any(not math.isfinite(b) or b < 0 for b in values):
        raise InputError(f"{name} must be finite and >= 0, got {list(values)}.")
    return values
