"""The contract every attack follows: validated inputs, eval mode with frozen parameters, and a result
whose success is always re-computed by a fresh forward pass of the model on the final images.

Distortion is Szegedy et al.'s per-pixel RMS change, sqrt(Σ(x' − x)² / n) with n the number of pixels;
the L2 and L∞ norms of x' − x are reported beside it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from .criteria import Criterion

NORMS = ("rms", "l2", "linf")


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode with parameter gradients off for the duration; both restored afterwards, also on errors."""
    modes = {m: m.training for m in model.modules()}
    grads = {p: p.requires_grad for p in model.parameters()}
    try:
        model.eval()
        for p in grads:
            p.requires_grad_(False)
        yield model
    finally:
        for m, training in modes.items():
            m.training = training
        for p, flag in grads.items():
            p.requires_grad_(flag)


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the model computes and in which float type (cpu/float32 for a model without parameters)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


@torch.no_grad()
def logits_of(model: nn.Module, images: Tensor, batch_size: int = 2000) -> Tensor:
    """Logits of a model on images [N, ...] in batches (the caller chooses the mode)."""
    parts = [model(images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)]
    return torch.cat(parts)


def check_images(images: object, name: str = "images") -> Tensor:
    """A non-empty float tensor of finite values in [0, 1], else an InputError naming the fix."""
    if not isinstance(images, Tensor):
        raise InputError(f"{name} must be a torch.Tensor of floats in [0, 1], got {type(images).__name__}; "
                         f"convert with torch.as_tensor(..., dtype=torch.float32).")
    if not images.dtype.is_floating_point:
        raise InputError(f"{name} must be floating point in [0, 1], got dtype {images.dtype}; "
                         f"for uint8 pixels use images.float() / 255.")
    if images.dim() < 2:
        raise InputError(f"{name} must be a batch [N, ...] with at least 2 dimensions, got shape "
                         f"{tuple(images.shape)}; add a batch dimension with images.unsqueeze(0).")
    if images.shape[0] == 0:
        raise InputError(f"{name} is an empty batch (shape {tuple(images.shape)}); pass at least one image.")
    lo, hi = (float(v) for v in torch.aminmax(images.detach()))
    if not (lo >= 0 and hi <= 1):  # also catches NaN, for which every comparison is False
        if not bool(torch.isfinite(images).all()):
            bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
            raise InputError(f"{name} contain NaN or infinite values in {bad} image(s); clean the data first.")
        raise InputError(f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; attacks work on raw "
                         f"pixels in [0, 1]: put any normalisation inside the model.")
    return images


CACHE_ELEMENTS = 1 << 18  # floats per chunk of x_adv − x: 1 MiB, inside a core's L2
PROBE = 16  # images run through the model to validate inputs when the caller needs no clean logits


def prepare(model: nn.Module, images: object, criterion: Criterion | None, batch_size: int = 2000, *,
            clean_logits: bool = True) -> tuple[Tensor, Criterion | None, Tensor]:
    """Validate inputs; return the images on the model's device and dtype, the criterion there, and the
    clean logits (computed in eval mode; call inside `attack_mode`). With clean_logits=False only the
    first PROBE images are run (to check the model accepts them) and their logits are returned."""
    images = check_images(images)
    if criterion is not None and not isinstance(criterion, Criterion):
        raise InputError(f"criterion must be Misclassification(labels) or TargetedMisclassification(targets), "
                         f"got {type(criterion).__name__}.")
    device, dtype = model_device_dtype(model)
    x = images.detach().to(device=device, dtype=dtype)
    probe = x if clean_logits else x[:PROBE]
    try:
        logits = logits_of(model, probe, batch_size)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"the model rejects images of shape {tuple(images.shape)} ({first}); pass the shape it "
                         f"was built for, e.g. [N, 1, 28, 28] for the MNIST zoo.") from None
    if logits.dim() != 2 or logits.shape[0] != probe.shape[0]:
        raise InputError(f"the model must return logits [N, classes]; it returned shape {tuple(logits.shape)} "
                         f"for {probe.shape[0]} images.")
    if not bool(torch.isfinite(logits).all()):
        raise InputError("the model returns NaN or infinite logits on these images; check the model and inputs.")
    probs_like = bool((logits >= 0).all() and (logits <= 1).all()
                      and torch.allclose(logits.sum(1), torch.ones_like(logits[:, 0]), atol=1e-3))
    if probs_like and logits.shape[1] > 1:
        warnings.warn("the model's outputs look like probabilities (softmax already applied); attacks expect "
                      "logits, and gradients through a saturated softmax can hide adversarial examples.",
                      stacklevel=3)
    if criterion is not None:
        criterion.validate(x.shape[0], logits.shape[1])
        criterion = criterion.to(device)
    return x, criterion, logits


def distortions(x: Tensor, x_adv: Tensor, workspace: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(RMS, L2, L∞) of x_adv − x per sample; x_adv may carry a leading budget dimension [K, N, ...].
    `workspace` (at least x.numel() elements of x's dtype) is reused for x_adv − x if given."""
    flat_x = x.reshape(x.shape[0], -1)
    adv = x_adv.reshape(-1, *flat_x.shape)  # [K, N, D], K = 1 for a minimal result
    # one budget at a time: no [K, N, D] temporary
    buf = torch.empty_like(flat_x) if workspace is None else workspace.view(-1)[: flat_x.numel()].view_as(flat_x)
    l2 = torch.empty(adv.shape[:2], device=x.device)
    linf = torch.empty_like(l2)
    rows = max(1, CACHE_ELEMENTS // max(flat_x.shape[1], 1))  # r stays in cache for its three reductions
    for k in range(adv.shape[0]):
        for i in range(0, flat_x.shape[0], rows):
            r = torch.sub(adv[k, i:i + rows], flat_x[i:i + rows], out=buf[i:i + rows])
            l2[k, i:i + rows] = torch.linalg.vector_norm(r, dim=-1, dtype=torch.float32)
            linf[k, i:i + rows] = r.abs_().amax(dim=-1)
    shape = x_adv.shape[: x_adv.dim() - x.dim() + 1]
    return (l2 / math.sqrt(flat_x.shape[1])).view(shape), l2.view(shape), linf.view(shape)


@torch.no_grad()
def evaluate(model: nn.Module, x_adv: Tensor, criterion: Criterion, *, per_budget: bool = False,
             batch_size: int = 2000) -> tuple[Tensor, Tensor, Tensor]:
    """Fresh forward pass in eval mode: (success, predicted class, softmax confidence of that class).

    x_adv is [N, ...], or [K, N, ...] with per_budget=True; the outputs are [N] or [K, N]. The model's
    mode and parameter flags are restored afterwards.
    """
    device, dtype = model_device_dtype(model)
    lead = x_adv.shape[:2] if per_budget else x_adv.shape[:1]
    if lead[-1] != len(criterion):
        raise InputError(f"x_adv of shape {tuple(x_adv.shape)} does not hold {len(criterion)} images (one per "
                         f"label/target of the criterion){'' if per_budget else '; for [K, N, ...] pass per_budget=True'}.")
    flat = x_adv.reshape(-1, *x_adv.shape[len(lead):]).to(device=device, dtype=dtype)
    with attack_mode(model):
        logits = logits_of(model, flat, batch_size)
    logits = logits.reshape(*lead, logits.shape[-1])
    success = criterion.to(device).is_adversarial(logits)
    top, pred = logits.max(dim=-1)
    confidence = (top - logits.logsumexp(dim=-1)).exp_().float()  # softmax probability of the top class
    return success, pred, confidence


def verify(model: nn.Module, x_adv: Tensor, criterion: Criterion, *, per_budget: bool = False) -> Tensor:
    """Whether each image of x_adv ([N, ...], or [K, N, ...] with per_budget=True) is adversarial, by a
    fresh forward pass of the model in eval mode."""
    return evaluate(model, x_adv, criterion, per_budget=per_budget)[0]


@dataclass
class AttackResult:
    """What an attack returns. For a minimal attack x_adv is [N, ...] and the per-sample fields are [N];
    for a fixed-budget attack (K budgets) x_adv is [K, N, ...] and they are [K, N].

    `success` always comes from a fresh forward pass on the final x_adv; `confidence` is the softmax
    probability of the predicted class; `distortion` is the per-pixel RMS of x_adv − x.
    """

    x: Tensor
    x_adv: Tensor
    success: Tensor
    labels: Tensor
    targets: Tensor
    pred: Tensor
    confidence: Tensor
    distortion: Tensor
    l2: Tensor
    linf: Tensor
    budgets: tuple[float, ...] | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    attack: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    wall_time: float = 0.0

    @property
    def success_rate(self) -> Tensor:
        """Share of successful samples: a 0-d tensor (minimal attack) or one value per budget [K]."""
        return self.success.float().mean(dim=-1)

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
        if norm not in NORMS:
            raise InputError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}.")
        return {"rms": self.distortion, "l2": self.l2, "linf": self.linf}[norm]

    def clip_to(self, budgets: Sequence[float], norm: str = "rms") -> Tensor:
        """Success [K, N] of a minimal attack within each budget: success and distortion <= budget.

        One minimal run gives a whole success-vs-budget curve; the comparison is exact (no tolerance).
        """
        if self.is_fixed_budget:
            raise InputError(f"{self.attack} is a fixed-budget result (budgets {self.budgets}); clip_to needs a "
                             f"minimal attack such as lbfgs_attack or fgsm_min_epsilon.")
        b = _budgets(budgets)
        within = self.measure(norm).unsqueeze(0) <= torch.tensor(b, device=self.success.device).unsqueeze(1)
        return self.success.unsqueeze(0) & within

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers: success rate, error rate (pred ≠ label, clean errors included), mean
        wrong-label confidence, mean and median RMS distortion over the successful samples, wall time.
        For a fixed-budget result each number is a list over the budgets."""
        def stats(k: int | None) -> dict[str, float]:
            pick = (lambda t: t) if k is None else (lambda t: t[k])
            ok = pick(self.success).cpu()
            dist = pick(self.distortion).cpu()[ok].double()
            return {"success_rate": float(ok.float().mean()),
                    "error_rate": float(pick(self.error_rate())),
                    "mean_wrong_confidence": float(pick(self.mean_wrong_confidence())),
                    "mean_distortion": float(dist.mean()) if dist.numel() else math.nan,
                    "median_distortion": float(dist.median()) if dist.numel() else math.nan}

        out: dict[str, Any] = {"attack": self.attack, "n": int(self.x.shape[0]), "wall_time_s": self.wall_time,
                               "distortion_measure": "RMS = sqrt(sum((x' - x)^2) / n_pixels), successes only"}
        if self.is_fixed_budget:
            per = [stats(k) for k in range(self.success.shape[0])]
            out["budgets"] = list(self.budgets or ())
            out.update({key: [p[key] for p in per] for key in per[0]})
        else:
            out.update(stats(None))
        return out

    def to_tensors(self) -> dict[str, Tensor]:
        """Flat tensors for saving: x, x_adv, label, target (−1 untargeted), success, distortion (RMS), pred,
        plus confidence, l2, linf, budgets (fixed-budget only) and extras as `extra.<name>`."""
        out = {"x": self.x, "x_adv": self.x_adv, "label": self.labels, "target": self.targets,
               "success": self.success, "distortion": self.distortion, "pred": self.pred,
               "confidence": self.confidence, "l2": self.l2, "linf": self.linf}
        if self.budgets is not None:
            out["budgets"] = torch.tensor(self.budgets, dtype=torch.float64)
        out.update({f"extra.{k}": v for k, v in self.extras.items()})
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def _budgets(budgets: Sequence[float] | float) -> tuple[float, ...]:
    if isinstance(budgets, (int, float)):
        budgets = [budgets]
    try:
        values = tuple(float(b) for b in budgets)
    except (TypeError, ValueError):
        raise InputError(f"budgets must be a list of numbers, got {budgets!r}.") from None
    if not values:
        raise InputError("budgets is empty; pass at least one value, e.g. [0.1, 0.25].")
    if any(not math.isfinite(b) or b < 0 for b in values):
        raise InputError(f"budgets must be finite and >= 0, got {list(values)}.")
    return values


def check_positive(name: str, value: object) -> float:
    """A positive finite number, else an InputError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise InputError(f"{name} must be a positive finite number, got {value!r}.")
    return float(value)


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """An integer >= minimum, else an InputError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


def check_budgets(budgets: Sequence[float] | float, name: str = "budgets") -> tuple[float, ...]:
    """Validated list of non-negative finite budgets (ε or σ)."""
    try:
        return _budgets(budgets)
    except InputError as exc:
        raise InputError(str(exc).replace("budgets", name, 1)) from None


Measures = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]  # success, pred, confidence, RMS, L2, L∞


def measure(model: nn.Module, x: Tensor, x_adv: Tensor, criterion: Criterion, *, per_budget: bool = False,
            batch_size: int = 2000, workspace: Tensor | None = None) -> Measures:
    """Every per-sample field of a result: a fresh forward pass on x_adv, and its distortions from x."""
    success, pred, confidence = evaluate(model, x_adv, criterion, per_budget=per_budget, batch_size=batch_size)
    return (success, pred, confidence, *distortions(x, x_adv, workspace))


def build_result(model: nn.Module, x: Tensor, x_adv: Tensor, criterion: Criterion, *, attack: str,
                 params: dict[str, Any], wall_time: float, budgets: tuple[float, ...] | None = None,
                 extras: dict[str, Tensor] | None = None, batch_size: int = 2000,
                 measures: Measures | None = None) -> AttackResult:
    """Assemble an AttackResult, re-verifying every x_adv with a fresh forward pass (`measure`); an attack
    that already ran `measure` on its final x_adv, chunk by chunk, may pass the measures instead."""
    if measures is None:
        measures = measure(model, x, x_adv, criterion, per_budget=budgets is not None, batch_size=batch_size)
    success, pred, confidence, rms, l2, linf = (t.to(x.device) for t in measures)
    n = x.shape[0]
    labels = criterion.labels if criterion.labels is not None else torch.full((n,), -1, dtype=torch.long)
    targets = criterion.targets if criterion.targets is not None else torch.full((n,), -1, dtype=torch.long)
    return AttackResult(x=x.detach(), x_adv=x_adv.detach(), success=success, labels=labels.to(x.device),
                        targets=targets.to(x.device), pred=pred, confidence=confidence, distortion=rms, l2=l2,
                        linf=linf, budgets=budgets, extras=dict(extras or {}), attack=attack, params=params,
                        wall_time=wall_time)
