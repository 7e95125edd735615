"""The contract every attack follows: validated inputs, eval mode with frozen parameters, and a result
whose success is always re-computed by a fresh forward pass of the model on the final images.

`attack` (Foolbox 3's fixed entry point, as a decorator) owns that contract: an attack module writes only its
run, `run(a: Prepared, *, params) -> Run`, and the decorator makes the public function
`(model, images, criterion[, budgets], *, params) -> AttackResult` around it, which checks the arguments,
holds the model in attack mode, prepares inputs, counts the model's forward and backward passes (adv_lib's
cost measure), re-verifies the final images and records the bound arguments as the result's params.

Models: any nn.Module returning logits [N, C] (C, the class count, is read from its output), or a plain
function x -> logits (wrapped). Images lie in `bounds` (default (0, 1)); a model trained on normalised
inputs is attacked in pixel space through `Normalized(model, mean, std)`.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from .criteria import Criterion
from .result import AttackResult, check_budgets  # noqa: F401  (re-exported: attacks import them from here)

Bounds = tuple[float, float]


class FunctionModel(nn.Module):
    """A plain function x -> logits as a module (no parameters), so the contract applies to it too."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class Normalized(nn.Module):
    """model((x − mean) / std): attack a model trained on normalised inputs in pixel space; mean and std are
    numbers or one value per channel."""

    def __init__(self, model: nn.Module, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        super().__init__()
        m, s = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if not bool(torch.isfinite(m).all()) or not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
            raise InputError(f"Normalized needs finite mean and std > 0, got mean={mean!r}, std={std!r}.")
        self.model = as_model(model)
        self.register_buffer("mean", m.reshape(-1, 1, 1) if m.dim() else m)
        self.register_buffer("std", s.reshape(-1, 1, 1) if s.dim() else s)

    def forward(self, x: Tensor) -> Tensor:
        # to(x): x's device as well as its dtype, so a wrapper built around a GPU model without .to(device) works
        # (its per-channel buffers start on the CPU, and only a 0-d CPU tensor may meet a CUDA one)
        return self.model((x - self.mean.to(x)) / self.std.to(x))


def as_model(model: object) -> nn.Module:
    """The model as an nn.Module: itself, a plain callable wrapped in FunctionModel, else an InputError."""
    if isinstance(model, nn.Module):
        return model
    if callable(model):
        return FunctionModel(model)  # type: ignore[arg-type]
    raise InputError(f"model must be a torch.nn.Module or a function images -> logits, got {type(model).__name__}.")


def check_bounds(bounds: object) -> Bounds:
    """(lo, hi) with finite lo < hi, else an InputError."""
    try:
        lo, hi = (float(v) for v in bounds)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(f"bounds must be a pair (lo, hi), got {bounds!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(f"bounds must be finite with lo < hi, got ({lo}, {hi}).")
    return lo, hi


@contextmanager
def attack_mode(model: nn.Module | Callable[[Tensor], Tensor]) -> Iterator[nn.Module]:
    """Eval mode with parameter gradients off for the duration; both restored afterwards, also on errors.
    Yields the model as a module (a plain function is wrapped)."""
    model = as_model(model)
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


def check_images(images: object, name: str = "images", bounds: Bounds = (0.0, 1.0)) -> Tensor:
    """A non-empty float tensor of finite values within bounds (default [0, 1]), else an InputError."""
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
    if not (lo >= bounds[0] and hi <= bounds[1]):  # also catches NaN, for which every comparison is False
        if not bool(torch.isfinite(images).all()):
            bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
            raise InputError(f"{name} contain NaN or infinite values in {bad} image(s); clean the data first.")
        raise InputError(f"{name} must lie in [{bounds[0]:g}, {bounds[1]:g}] (the attack's bounds), got values in "
                         f"[{lo:.4g}, {hi:.4g}]; pass bounds=(lo, hi), or attack raw pixels through "
                         f"Normalized(model, mean, std).")
    return images


PROBABILITIES = ("the model returns probabilities (non-negative, each row sums to 1): return logits: drop the final "
                 "softmax; attacks need logits (the softmax flattens their gradients).")


def looks_like_probabilities(logits: Tensor) -> bool:
    """Outputs [N, C >= 2] that are non-negative with every row summing to 1 (within 1e-4): a softmax already
    applied. Attacks and the audit's model check refuse them alike (`PROBABILITIES`)."""
    out = logits.detach().double()
    return out.shape[1] > 1 and bool((out >= 0).all()) and float((out.sum(1) - 1).abs().max()) <= 1e-4


CACHE_ELEMENTS = 1 << 18  # floats per chunk of x_adv − x: 1 MiB, inside a core's L2
PROBE = 16  # images run through the model to validate inputs when the caller needs no clean logits


def prepare(model: nn.Module, images: object, criterion: object, batch_size: int = 2000, *,
            clean_logits: bool = True, bounds: Bounds = (0.0, 1.0)) -> tuple[Tensor, Criterion, Tensor]:
    """Validate inputs; return the images on the model's device and dtype, the criterion there, and the
    clean logits (computed in eval mode; call inside `attack_mode`). With clean_logits=False only the
    first PROBE images are run (to check the model accepts them) and their logits are returned."""
    images = check_images(images, bounds=check_bounds(bounds))
    if not isinstance(criterion, Criterion):
        raise InputError(f"criterion must be Misclassification(labels) or TargetedMisclassification(targets), "
                         f"got {type(criterion).__name__}; e.g. fgsm(model, x, Misclassification(y), [0.1]).")
    device, dtype = model_device_dtype(model)
    if not any(True for _ in model.parameters()):
        dtype = images.dtype  # a model without parameters (e.g. a function) computes in the images' dtype
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
    if looks_like_probabilities(logits):
        raise InputError(PROBABILITIES)
    criterion.validate(x.shape[0], logits.shape[1])
    return x, criterion.to(device), logits


def distortions(x: Tensor, x_adv: Tensor, workspace: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(RMS, L2, L∞) of x_adv − x per sample; x_adv may carry a leading budget dimension [K, N, ...].
    `workspace` (at least x.numel() elements of x's dtype) is reused for x_adv − x if given."""
    flat_x = x.reshape(x.shape[0], -1)
    adv = x_adv.reshape(-1, *flat_x.shape)  # [K, N, D], K = 1 for a minimal result
    # one budget at a time: no [K, N, D] temporary
    buf = torch.empty_like(flat_x) if workspace is None else workspace.view(-1)[: flat_x.numel()].view_as(flat_x)
    l2 = torch.empty(adv.shape[:2], device=x.device, dtype=x.dtype)
    linf = torch.empty_like(l2)
    rows = max(1, CACHE_ELEMENTS // max(flat_x.shape[1], 1))  # r stays in cache for its three reductions
    for k in range(adv.shape[0]):
        for i in range(0, flat_x.shape[0], rows):
            r = torch.sub(adv[k, i:i + rows], flat_x[i:i + rows], out=buf[i:i + rows])
            l2[k, i:i + rows] = torch.linalg.vector_norm(r, dim=-1)
            linf[k, i:i + rows] = r.abs_().amax(dim=-1)
    shape = x_adv.shape[: x_adv.dim() - x.dim() + 1]
    return (l2 / math.sqrt(flat_x.shape[1])).view(shape), l2.view(shape), linf.view(shape)


@torch.no_grad()
def recheck(model: nn.Module, x_adv: Tensor, criterion: Criterion, *, per_budget: bool = False,
            batch_size: int = 2000) -> tuple[Tensor, Tensor, Tensor]:
    """An attack's re-check by a fresh forward pass in eval mode: (success, predicted class, softmax
    confidence of that class). x_adv is [N, ...], or [K, N, ...] with per_budget=True; the outputs are
    [N] or [K, N]. The model's mode and parameter flags are restored afterwards. (The model's error rate on
    a data set is blindspots.models.error_rate.)"""
    model = as_model(model)
    device, dtype = model_device_dtype(model)
    if not any(True for _ in model.parameters()):
        dtype = x_adv.dtype
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
    return recheck(model, x_adv, criterion, per_budget=per_budget)[0]


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


Measures = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]  # success, pred, confidence, RMS, L2, L∞


def assess(model: nn.Module, x: Tensor, x_adv: Tensor, criterion: Criterion, *, per_budget: bool = False,
            batch_size: int = 2000, workspace: Tensor | None = None) -> Measures:
    """Every per-sample field of a result: a fresh forward pass on x_adv, and its distortions from x. (The
    size of one result's perturbations in one norm is AttackResult.measure.)"""
    success, pred, confidence = recheck(model, x_adv, criterion, per_budget=per_budget, batch_size=batch_size)
    return (success, pred, confidence, *distortions(x, x_adv, workspace))


def clean_errors(logits: Tensor, criterion: Criterion) -> Tensor:
    """[N]: the model errs on the clean image: prediction ≠ label, or (no label known) the clean image
    already meets the criterion."""
    if criterion.labels is not None:
        return logits.argmax(dim=-1) != criterion.labels.to(logits.device)
    return criterion.is_adversarial(logits)


def build_result(model: nn.Module, x: Tensor, x_adv: Tensor, criterion: Criterion, *, attack: str,
                 params: dict[str, Any], wall_time: float, budgets: tuple[float, ...] | None = None,
                 extras: dict[str, Tensor] | None = None, batch_size: int = 2000,
                 measures: Measures | None = None, clean_logits: Tensor | None = None,
                 bounds: Bounds = (0.0, 1.0)) -> AttackResult:
    """Assemble an AttackResult, re-verifying every x_adv with a fresh forward pass (`assess`); an attack
    that already ran `assess` on its final x_adv, chunk by chunk, may pass the measures instead.
    clean_logits (of x, for the clean_error flags) are computed here if not given."""
    model = as_model(model)
    if measures is None:
        measures = assess(model, x, x_adv, criterion, per_budget=budgets is not None, batch_size=batch_size)
    if clean_logits is None:
        with attack_mode(model):
            clean_logits = logits_of(model, x, batch_size)
    success, pred, confidence, rms, l2, linf = (t.to(x.device) for t in measures)
    n = x.shape[0]
    labels = criterion.labels if criterion.labels is not None else torch.full((n,), -1, dtype=torch.long)
    targets = criterion.targets if criterion.targets is not None else torch.full((n,), -1, dtype=torch.long)
    return AttackResult(x=x.detach(), x_adv=x_adv.detach(), success=success, labels=labels.to(x.device),
                        targets=targets.to(x.device), pred=pred, confidence=confidence, rms=rms, l2=l2,
                        linf=linf, budgets=budgets, extras=dict(extras or {}), attack=attack, params=params,
                        wall_time=wall_time, clean_error=clean_errors(clean_logits, criterion).to(x.device),
                        bounds=bounds, model=model, criterion=criterion)


def check_nonnegative(name: str, value: object) -> float:
    """A finite number >= 0, else an InputError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """One of choices, else an InputError listing them."""
    if value not in choices:
        raise InputError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}.")
    return str(value)


VERIFY_ULPS = 64  # a kept example clears the criterion by this many float steps of the logits' scale


def tolerance(logits: Tensor) -> Tensor:
    """The margin a kept example must clear [N]: VERIFY_ULPS float steps of the row's largest logit. Right at
    the boundary the margin is ~0, and a success that a fresh pass in another batch (other rounding) would not
    confirm must not be kept as the minimum."""
    return VERIFY_ULPS * torch.finfo(logits.dtype).eps * logits.detach().abs().amax(dim=1).clamp(min=1)


def verified(logits: Tensor, criterion: Criterion) -> Tensor:
    """[N]: the criterion holds with the margin `tolerance` (a negative margin loss is the criterion itself)."""
    return criterion.loss(logits.detach(), "margin") < -tolerance(logits)


class PassCounter(nn.Module):
    """The model, counting images run forward and backward through it (a batch of B images counts B; a backward
    pass counts each time a gradient reaches the output, so k gradients of one output count k)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_passes = 0
        self.backward_passes = 0

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        n = int(x.shape[0])
        self.forward_passes += n
        if isinstance(out, Tensor) and out.requires_grad:
            out.register_hook(functools.partial(self._backward, n))
        return out

    def _backward(self, n: int, grad: Tensor) -> None:
        self.backward_passes += n


@dataclass
class Prepared:
    """What the entry point hands an attack's run: the model (eval mode, parameters frozen, passes counted),
    the images on its device and dtype, the criterion there, the clean logits (of the first PROBE images only
    for an attack declared with clean_logits=False), the checked budgets (None for a minimal attack) and
    bounds, and the batch size for plain forward passes."""

    model: nn.Module
    x: Tensor
    criterion: Criterion
    clean_logits: Tensor
    budgets: tuple[float, ...] | None
    bounds: Bounds
    batch_size: int
    uncounted: nn.Module = field(repr=False)

    def assess(self, x: Tensor, x_adv: Tensor, criterion: Criterion, *, per_budget: bool = False,
               workspace: Tensor | None = None) -> Measures:
        """`assess` (the re-verification) by the uncounted model: its passes are not the attack's cost."""
        return assess(self.uncounted, x, x_adv, criterion, per_budget=per_budget, batch_size=self.batch_size,
                       workspace=workspace)


@dataclass
class Run:
    """What an attack's run returns: the final images ([N, ...], or [K, N, ...] at K budgets), extras, and
    optionally the measures of x_adv (a run that re-verified chunk by chunk, by `Prepared.assess`), the clean
    logits of every image (a run declared with clean_logits=False that computed them), the result's name where
    it depends on the parameters ("pgd-l2"), and facts recorded in params beside the bound arguments."""

    x_adv: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)
    measures: Measures | None = None
    clean_logits: Tensor | None = None
    attack: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


def _recorded(value: Any) -> Any:
    """A bound argument as it is recorded in params (JSON-ready): tuples as lists, a tensor by its shape."""
    if isinstance(value, Tensor):
        return f"tensor {list(value.shape)}"
    if isinstance(value, tuple):
        return list(value)
    return value


POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD


def attack(name: str, *, budgets: str | None = None, check: Callable[[dict[str, Any]], None] | None = None,
           clean_logits: bool = True, params_of: Callable[..., Any] | None = None
           ) -> Callable[[Callable[..., Run]], Callable[..., AttackResult]]:
    """Make an attack's run into its public function (the one entry point every attack shares).

    name: the result's `attack` (a run may override it); budgets: the name of the budgets argument of a
    fixed-budget attack ("epsilons", "sigmas"), None for a minimal attack; check(arguments): validates the
    bound arguments before any pass of the model (the budgets and `bounds` are checked here); clean_logits:
    False to run only PROBE images for validation; params_of: take the keyword-only parameters from that
    function instead of the run's (the run then takes **params).

    The public function checks, holds the model in `attack_mode`, `prepare`s the inputs, calls
    run(Prepared, **params) with the model wrapped in a PassCounter, re-verifies its x_adv by a fresh forward
    pass (unless the run did) and returns the AttackResult, with params = the bound arguments (budgets and
    bounds as lists, a tensor by its shape) updated by the run's own, and n_forward / n_backward = the images
    the run passed forward / backward through the model (the entry's own input check and re-verification
    are not counted)."""

    def wrap(run: Callable[..., Run]) -> Callable[..., AttackResult]:
        keywords = [p for p in inspect.signature(params_of or run).parameters.values()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY]
        positional = [inspect.Parameter("model", POSITIONAL, annotation="nn.Module"),
                      inspect.Parameter("images", POSITIONAL, annotation="Tensor"),
                      inspect.Parameter("criterion", POSITIONAL, annotation="Criterion")]
        if budgets is not None:
            positional.append(inspect.Parameter(budgets, POSITIONAL, annotation="Sequence[float]"))
        signature = inspect.Signature(positional + keywords, return_annotation="AttackResult")

        @functools.wraps(run)
        def entry(*args: Any, **kwargs: Any) -> AttackResult:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            params = dict(bound.arguments)
            model, images, criterion = params.pop("model"), params.pop("images"), params.pop("criterion")
            given = check_budgets(params.pop(budgets), budgets) if budgets is not None else None
            if check is not None:
                check(dict(bound.arguments))
            if "bounds" in params:
                params["bounds"] = check_bounds(params["bounds"])
            bounds = params.get("bounds", (0.0, 1.0))
            batch = params["batch_size"] if isinstance(params.get("batch_size"), int) else 2000
            t0 = time.perf_counter()
            plain = as_model(model)
            with attack_mode(plain):
                x, crit, logits = prepare(plain, images, criterion, batch, clean_logits=clean_logits, bounds=bounds)
                counter = PassCounter(plain)
                out = run(Prepared(counter, x, crit, logits, given, bounds, batch, plain), **params)
            wall_time = time.perf_counter() - t0
            recorded = ({budgets: list(given or ())} if budgets is not None else {})
            recorded.update({k: _recorded(v) for k, v in params.items()})
            recorded.update(out.params)
            result = build_result(plain, x, out.x_adv, crit, attack=out.attack or name, params=recorded,
                                  wall_time=wall_time, budgets=given, extras=out.extras, batch_size=batch,
                                  measures=out.measures, clean_logits=out.clean_logits if out.clean_logits is not None
                                  else logits if clean_logits else None, bounds=bounds)
            result.n_forward, result.n_backward = counter.forward_passes, counter.backward_passes
            return result

        entry.__signature__ = signature  # type: ignore[attr-defined]
        entry.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()} | \
            {"return": "AttackResult"}
        entry.run = run  # type: ignore[attr-defined]
        return entry

    return wrap
