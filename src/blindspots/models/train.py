"""Reproducible training of the zoo on CPU (or CUDA): one recipe per model family.

The papers leave the optimiser, epochs, activation and weight-decay form open; the recipes below were
chosen so the models land near the published test errors, and every choice is recorded in the
checkpoint's JSON. Weight decay is always (λ/2)·Σ‖W‖² over weight matrices (not biases), added to the
*mean* cross-entropy: with that form softmax regression trained to its optimum gives the paper's
FC10(λ) errors (λ·Σ‖W‖² does not).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..data import ImageSet, load_mnist
from .spec import ModelSpec, parse_spec
from .zoo import build_model, one_vs_rest_nll


class TrainingObjective(Protocol):
    """What `fit` accepts instead of plain J (training.Objective, training.AdversarialPool): the data loss of one
    minibatch, given the model, the batch, J and the shuffling generator."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Any,
             gen: torch.Generator) -> torch.Tensor: ...


class StoredObjective(TrainingObjective, Protocol):
    """A training objective the checkpoint store can name: its parameters, a file-name tag and a sentence."""

    @property
    def slug(self) -> str: ...

    def as_dict(self) -> dict[str, Any]: ...

    def describe(self) -> str: ...


# called after every epoch with (epoch number from 1, the model): learning curves, early stopping (models in
# train mode; evaluate through `inference.predict`, which switches to eval mode and back). Returning True stops
# training.
EpochHook = Callable[[int, nn.Module], "bool | None"]
# called after every epoch (after the hook) with (epoch, the run's full state as tensors): a caller saves it
# every few epochs and passes it back as `fit(..., resume=state)` to continue a killed run bit for bit
StateHook = Callable[[int, "dict[str, torch.Tensor]"], None]


@dataclass(frozen=True)
class Recipe:
    """How a model family is trained. `weight_decay` is λ in mean-CE + (λ/2)·Σ‖W‖²."""

    optimizer: str  # "lbfgs" (full batch, to the optimum) | "sgd" (Nesterov momentum, cosine or exponential lr)
    epochs: int
    weight_decay: float
    lr: float = 0.1
    batch_size: int = 128
    momentum: float = 0.9
    pretrain_epochs: int = 0  # autoencoder pre-training (AE models)
    pretrain_noise: float = 0.0  # masking-noise rate of the denoising autoencoder
    sparsity: tuple[float, float] | None = None  # (target mean activation rho, weight beta) of a sparse AE
    max_norm: float | None = None  # max-norm constraint on incoming weight vectors (maxout)
    note: str = ""
    pretrain_lr: float = 1e-3  # Adam learning rate of the autoencoder (cosine-decayed when pretrain_cosine)
    pretrain_cosine: bool = False
    pretrain_decay: float = 0.0  # μ in the autoencoder's loss + (μ/2)·‖W_encoder‖²
    # None: cosine decay over all `epochs`; a factor d: lr·d^(epoch−1) in each epoch, never below lr_floor. The
    # second does not depend on the epoch count, so a retrain for the early-stopped number of epochs replays
    # exactly the schedule the early-stopping run saw (pylearn2's maxout decayed exponentially with a floor).
    lr_decay: float | None = None
    lr_floor: float = 0.0
    # pylearn2's SGD (the original maxout recipe): classical momentum with its update inc = m·inc − lr·g, p += inc
    # (nesterov False); lr divided by `lr_batch_decay` after every minibatch (floor lr_floor); momentum rising
    # linearly from `momentum` at epoch 1 to `momentum_final` at epoch `momentum_saturate`
    nesterov: bool = True
    lr_batch_decay: float | None = None
    momentum_final: float | None = None
    momentum_saturate: int = 0
    init_range: float | None = None  # weights U(−r, r) and biases 0 (None: PyTorch's default initialisation)
    input_dropout_scale: float | None = None  # maxout input dropout: kept pixels × this (None: 1/keep, inverted)
    l1_first: float = 0.0  # c in loss + c·Σ|W| over the first layer's weights (Goodfellow 2015's L1 decay)
    # how λ enters the loss: "half" (λ/2)·Σ‖W‖² over all weight matrices; "layer_mean" λ·Σ_layers Σw²/k, k the
    # layer's weight count (the per-layer form of public reproductions of Szegedy et al.)
    decay_form: str = "half"


# Fields added after checkpoints were first stored: left out of recipe_dict (so of the checkpoint-name hash)
# while at their default, so adding them renamed no existing checkpoint.
_LATER_FIELDS = ("pretrain_lr", "pretrain_cosine", "pretrain_decay", "lr_decay", "lr_floor", "nesterov",
                 "lr_batch_decay", "momentum_final", "momentum_saturate", "init_range", "input_dropout_scale",
                 "l1_first", "decay_form")


def original_maxout_recipe(max_epochs: int) -> Recipe:
    """pylearn2's mnist_pi.yaml, the recipe of the "original maxout network" (0.94% test error), value for value:
    batch 100, lr 0.1 ÷ 1.000004 after every minibatch (floor 1e-6), classical momentum 0.5 → 0.7 over epochs
    1–250, max column norm 1.9365 on every layer, weights U(±0.005), biases 0, input dropout keep 0.8 unscaled,
    hidden dropout keep 0.5 scaled by 2 (../shared/reference/maxout-recipe.md). `max_epochs` caps a phase."""
    return Recipe("sgd", epochs=max_epochs, weight_decay=0.0, lr=0.1, batch_size=100, momentum=0.5,
                  max_norm=1.9365, nesterov=False, lr_batch_decay=1.000004, lr_floor=1e-6, momentum_final=0.7,
                  momentum_saturate=250, init_range=0.005, input_dropout_scale=1.0,
                  note=("the original maxout recipe (pylearn2 mnist_pi.yaml): SGD, batch 100, lr 0.1 ÷ 1.000004 per "
                        "minibatch (floor 1e-6), classical momentum 0.5 → 0.7 over epochs 1–250, max column norm "
                        "1.9365 on every layer, weights U(±0.005), input dropout keep 0.8 unscaled, hidden keep 0.5 ×2"))


def batch_lr(recipe: Recipe, batch: int) -> float:
    """The learning rate of minibatch `batch` (from 0, counted over the whole run) of a per-minibatch decay."""
    assert recipe.lr_batch_decay is not None
    try:
        return max(recipe.lr / recipe.lr_batch_decay ** batch, recipe.lr_floor)
    except OverflowError:  # far past the floor
        return recipe.lr_floor


def epoch_momentum(recipe: Recipe, epoch: int) -> float:
    """The momentum of `epoch` (from 1): constant, or rising linearly to momentum_final at momentum_saturate
    (pylearn2's MomentumAdjustor with start 1)."""
    if recipe.momentum_final is None or recipe.momentum_saturate <= 1:
        return recipe.momentum
    a = min(max((epoch - 1) / (recipe.momentum_saturate - 1), 0.0), 1.0)
    return recipe.momentum * (1 - a) + a * recipe.momentum_final


class MomentumSGD(torch.optim.Optimizer):
    """pylearn2's SGD update: inc = m·inc − lr·g; p += inc (classical momentum with the learning rate inside the
    velocity, so a decaying lr does not rescale the velocity already built up). The velocity lives in the state
    under "momentum_buffer", as torch.optim.SGD's, so saved runs resume through the same code."""

    def __init__(self, params: Any, lr: float, momentum: float) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                inc = state.get("momentum_buffer")
                if inc is None:
                    inc = state["momentum_buffer"] = torch.zeros_like(p)
                inc.mul_(group["momentum"]).add_(p.grad, alpha=-group["lr"])
                p.add_(inc)


def default_recipe(spec: str | ModelSpec) -> Recipe:
    s = parse_spec(spec)
    if s.kind == "fc" and not s.hidden:
        lam = 1e-4 if s.weight_decay is None else s.weight_decay
        return Recipe("lbfgs", epochs=300, weight_decay=lam,
                      note="softmax regression trained to its optimum by full-batch L-BFGS (300 iterations)")
    if s.kind == "fc":
        lam = 3e-5 if s.weight_decay is None else s.weight_decay
        # measured on full MNIST, seed 0, 40 epochs (test / train error): FC100-100-10 λ = 1e-5 1.99% / 0%,
        # 3e-5 1.79% / 0%, 5e-5 1.81% / 0.03%, 1e-4 1.72% / 0.19%, 0 2.10%; FC200-200-10 λ = 1e-5 1.66%,
        # 3e-5 1.67% / 0%, 1e-4 1.64% / 0.16%. 3e-5 keeps the paper's 0% training error. (60 epochs,
        # lr 0.1 or batch 32 at λ = 1e-5: 1.92%, 1.95%, 1.90%.)
        return Recipe("sgd", epochs=40, weight_decay=lam, lr=0.2, batch_size=64,
                      note="sigmoid hidden units, SGD + Nesterov momentum 0.9, lr 0.2 with cosine decay, batch 64")
    if s.kind == "ae":
        lam = 3e-6 if s.weight_decay is None else s.weight_decay
        # measured on full MNIST, seed 0, 1 thread: 2.28% test error, 8.8% under clipped Gaussian noise σ = 0.1
        # (first 2,000 test images, 3.1% clean on them), 65 s. The former recipe (no encoder decay, Adam 1e-3
        # for 30 epochs, λ = 1e-5) gave 2.71% test error but 80.6% under that noise, in 260 s on 2 threads.
        # Encoder decay 2e-2: 2.56%; sparsity target 0.1: 2.65%, 0.03: 2.61%; weight 6: 2.56% (5.9% noise);
        # masking or Gaussian denoising and tied weights did worse on a 20k-image subset.
        return Recipe("lbfgs", epochs=300, weight_decay=lam, pretrain_epochs=15, sparsity=(0.05, 3.0),
                      pretrain_lr=3e-3, pretrain_cosine=True, pretrain_decay=1e-2,
                      note=("sparse sigmoid autoencoder (KL sparsity: mean activation 0.05, weight 3; cross-entropy "
                            "reconstruction; encoder weight decay 1e-2; Adam lr 3e-3 with cosine decay, 15 epochs) "
                            "trained unsupervised first; then a softmax on its frozen code, trained to its optimum "
                            "by full-batch L-BFGS"))
    if s.kind == "cnn":
        lam = 1e-5 if s.weight_decay is None else s.weight_decay
        return Recipe("sgd", epochs=8, weight_decay=lam, lr=0.05, batch_size=64,
                      note="ReLU conv net, SGD + Nesterov momentum 0.9, cosine learning rate")
    if s.kind == "maxout":
        lam = 0.0 if s.weight_decay is None else s.weight_decay
        # measured on full MNIST, seed 0: 40 epochs -> 1.26% test error, 12 epochs -> 1.45% (the paper: 0.94%
        # after far longer training); lr 0.02 is slower (1.59% at 12 epochs), lr 0.1 unstable (3.3% at 15)
        return Recipe("sgd", epochs=40, weight_decay=lam, lr=0.05, batch_size=100, max_norm=3.5,
                      note="dropout 0.2 input / 0.5 hidden, max-norm 3.5, SGD + Nesterov momentum, cosine lr")
    lam = 0.0 if s.weight_decay is None else s.weight_decay
    # measured on full MNIST: 12.3% test error, mean unit output 67% on clean test images (the paper: 60.6%);
    # lr 0.05 left the outputs at 35%
    return Recipe("sgd", epochs=20, weight_decay=lam, lr=1.0, batch_size=100,
                  note=("one Gaussian unit per class with independent outputs p_k = exp(logit_k), trained with "
                        "their one-vs-rest likelihood (models.zoo.one_vs_rest_nll)"))


def first_layer_weight(model: nn.Module) -> torch.Tensor:
    """The weight matrix of the first layer that has one (the first nn.Linear or conv in module order)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            return module.weight
    raise ValueError("the model has no Linear or Conv2d layer")


def decay_penalty(model: nn.Module, lam: float, form: str = "half") -> torch.Tensor:
    """(λ/2)·Σ‖W‖² over weight matrices and conv kernels (parameters with ≥ 2 dims, not biases); form
    "layer_mean": λ·Σ over those layers of the mean squared weight (λ·Σw²/k)."""
    if form not in ("half", "layer_mean"):
        raise ValueError(f"unknown weight-decay form {form!r}; choose 'half' or 'layer_mean'.")
    weights = [p for name, p in model.named_parameters() if p.requires_grad and p.dim() >= 2
               and not name.endswith(("centers", "log_beta"))]
    if not weights or lam == 0:
        return torch.zeros(())
    if form == "layer_mean":
        return lam * torch.stack([w.square().mean() for w in weights]).sum()
    return 0.5 * lam * torch.stack([w.square().sum() for w in weights]).sum()


def epoch_lr(recipe: Recipe, epoch: int) -> float:
    """The learning rate at the start of `epoch` (from 1) of an exponential-decay recipe."""
    assert recipe.lr_decay is not None
    return max(recipe.lr * recipe.lr_decay ** (epoch - 1), recipe.lr_floor)


def _state(model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, epoch: int) -> dict[str, torch.Tensor]:
    """Everything an SGD run needs to continue: weights, momentum buffers, both random generators, the epoch."""
    out = {f"model.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        buf = opt.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            out[f"momentum.{i}"] = buf.detach().cpu().clone()
    out["rng.shuffle"] = gen.get_state()
    out["rng.torch"] = torch.get_rng_state()
    device = next(model.parameters()).device
    if device.type == "cuda":  # dropout masks on a GPU come from its own generator
        out["rng.cuda"] = torch.cuda.get_rng_state(device)
    out["epoch"] = torch.tensor([epoch])
    return out


def _restore(state: dict[str, torch.Tensor], model: nn.Module, opt: torch.optim.Optimizer,
             gen: torch.Generator, device: torch.device) -> int:
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        if f"momentum.{i}" in state:
            opt.state[p]["momentum_buffer"] = state[f"momentum.{i}"].to(device)
    gen.set_state(state["rng.shuffle"])
    torch.set_rng_state(state["rng.torch"])
    if "rng.cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["rng.cuda"], device)
    return int(state["epoch"][0])


def _sgd_epochs(model: nn.Module, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor,
                recipe: Recipe, epochs: int, gen: torch.Generator, device: torch.device,
                desc: str, progress: bool, loss_fn: Any = None, objective: TrainingObjective | None = None,
                on_epoch: EpochHook | None = None, resume: dict[str, torch.Tensor] | None = None,
                on_state: StateHook | None = None, offset: tuple[int, int] = (0, 0),
                freeze_momentum: bool = False) -> None:
    """SGD epochs. `offset` = (epochs, minibatches) an earlier run already trained this model for: the lr and
    momentum schedules continue from there (the maxout protocol's continuation on all 60,000 rows);
    `freeze_momentum` holds the momentum at the offset epoch's value instead (pylearn2's mnist_pi_continued.yaml
    starts a fresh Momentum rule at the value the first run had reached, with no MomentumAdjustor)."""
    opt: torch.optim.Optimizer
    if recipe.nesterov:
        opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    else:
        opt = MomentumSGD(params, lr=recipe.lr, momentum=recipe.momentum)
    n = x.shape[0]
    per_epoch = math.ceil(n / recipe.batch_size)
    total = epochs * per_epoch
    # cosine decay from lr to 0 over all steps, stepped per minibatch (unless the recipe decays per epoch or batch)
    per_batch = recipe.lr_batch_decay is not None
    schedule = None if recipe.lr_decay is not None or per_batch else torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    done = 0 if resume is None else _restore(resume, model, opt, gen, device)
    epoch0, batch0 = offset
    if schedule is not None and done:
        for _ in range(done * per_epoch):
            schedule.step()
    x, y = x.to(device), y.to(device)
    loss_fn = loss_fn or F.cross_entropy
    decay = recipe.weight_decay
    bar = tqdm(total=epochs, initial=done, desc=desc, unit="epoch", disable=not progress, leave=False)
    for epoch in range(done + 1, epochs + 1):
        model.train()
        if recipe.lr_decay is not None:
            for group in opt.param_groups:
                group["lr"] = epoch_lr(recipe, epoch0 + epoch)
        for group in opt.param_groups:
            group["momentum"] = epoch_momentum(recipe, epoch0 if freeze_momentum else epoch0 + epoch)
        perm = torch.randperm(n, generator=gen).to(device)
        for b, i in enumerate(range(0, n, recipe.batch_size)):
            if per_batch:
                for group in opt.param_groups:
                    group["lr"] = batch_lr(recipe, batch0 + (epoch - 1) * per_epoch + b)
            idx = perm[i:i + recipe.batch_size]
            xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)  # before the loss: an objective may back-propagate a part itself
            if objective is None:
                loss = loss_fn(model(xb), yb)
            else:
                loss = objective.loss(model, xb, yb, loss_fn, gen)
            if decay:
                loss = loss + decay_penalty(model, decay, recipe.decay_form).to(device)
            if recipe.l1_first:
                loss = loss + recipe.l1_first * first_layer_weight(model).abs().sum()
            loss.backward()
            opt.step()
            if schedule is not None:
                schedule.step()
            if recipe.max_norm is not None:
                _apply_max_norm(model, recipe.max_norm)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        stop = on_epoch(epoch, model) if on_epoch is not None else None
        if on_state is not None:
            on_state(epoch, _state(model, opt, gen, epoch))
        if stop:
            break
    bar.close()


@torch.no_grad()
def _uniform_init(model: nn.Module, r: float) -> None:
    """Every Linear layer's weights U(−r, r), biases 0 (pylearn2's `irange`)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.weight.uniform_(-r, r)
            if module.bias is not None:
                module.bias.zero_()


@torch.no_grad()
def _apply_max_norm(model: nn.Module, max_norm: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.Linear):
            norms = module.weight.norm(dim=1, keepdim=True).clamp(min=max_norm)
            module.weight.mul_(max_norm / norms)


def _lbfgs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, device: torch.device,
           desc: str, progress: bool) -> None:
    x, y = x.to(device), y.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=recipe.epochs, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")
    bar = tqdm(total=recipe.epochs, desc=desc, unit="it", disable=not progress, leave=False)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y) + decay_penalty(model, recipe.weight_decay, recipe.decay_form).to(device)
        loss.backward()
        bar.update(1)
        return loss

    model.train()
    opt.step(closure)
    bar.close()


def _pretrain_autoencoder(model: nn.Sequential, x: torch.Tensor, recipe: Recipe, gen: torch.Generator,
                          device: torch.device, progress: bool) -> None:
    """Unsupervised (sparse / denoising) autoencoder training of model.fc1, the encoder; the decoder is discarded.

    The encoder's weight decay (recipe.pretrain_decay) is what keeps the code usable under small input noise:
    without it the encoder's weight rows grow (mean norm ~5 against ~1.3 with decay 1e-2) and clipped
    Gaussian noise of σ = 0.1 gave 45-80% error instead of under 10%."""
    enc = model.fc1
    dec = nn.Linear(enc.out_features, enc.in_features).to(device)
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=recipe.pretrain_lr)
    flat = x.flatten(1)
    n = flat.shape[0]
    total = recipe.pretrain_epochs * math.ceil(n / 128)
    step = 0
    bar = tqdm(total=recipe.pretrain_epochs, desc="autoencoder", unit="epoch", disable=not progress, leave=False)
    for _ in range(recipe.pretrain_epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, 128):
            if recipe.pretrain_cosine:
                for group in opt.param_groups:
                    group["lr"] = recipe.pretrain_lr * 0.5 * (1 + math.cos(math.pi * step / total))
            step += 1
            xb = flat[perm[i:i + 128]].to(device)
            noisy = xb
            if recipe.pretrain_noise > 0:
                noisy = xb * (torch.rand(xb.shape, generator=gen) >= recipe.pretrain_noise).to(device, xb.dtype)
            code = torch.sigmoid(enc(noisy))
            loss = F.binary_cross_entropy_with_logits(dec(code), xb, reduction="sum") / xb.shape[0]
            if recipe.sparsity is not None:
                rho, beta = recipe.sparsity
                rho_hat = code.mean(dim=0).clamp(1e-6, 1 - 1e-6)
                kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
                loss = loss + beta * kl.sum()
            if recipe.pretrain_decay > 0:
                loss = loss + 0.5 * recipe.pretrain_decay * enc.weight.square().sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        bar.update(1)
        bar.set_postfix(recon=f"{loss.item():.4f}")
    bar.close()
    for p in enc.parameters():
        p.requires_grad_(False)


def training_loss(spec: str | ModelSpec) -> Any:
    """J of a family: softmax cross-entropy, except the RBF net's independent one-vs-rest units."""
    return one_vs_rest_nll if parse_spec(spec).kind == "rbf" else F.cross_entropy


def fit(spec: str | ModelSpec, data: ImageSet, *, seed: int = 0, epochs: int | None = None,
        device: str | torch.device = "cpu", progress: bool = True,
        recipe: Recipe | None = None, objective: TrainingObjective | None = None,
        on_epoch: EpochHook | None = None, resume: dict[str, torch.Tensor] | None = None,
        on_state: StateHook | None = None, init: dict[str, torch.Tensor] | None = None,
        offset: tuple[int, int] = (0, 0), freeze_momentum: bool = False) -> tuple[nn.Sequential, Recipe]:
    """Train a fresh model of `spec` on `data`; same seed and data give the same weights (on CPU).

    `objective` (training.Objective, training.AdversarialPool) replaces the loss J by an adversarial-training or
    noise-control objective built on J (SGD recipes only); `on_epoch(epoch, model)` runs after every SGD epoch
    (returning True stops early); `on_state(epoch, state)` hands out the run's state, `resume=state` continues it;
    `init` starts from these weights instead of a fresh initialisation, with the schedules at `offset` (see
    `_sgd_epochs`, and `freeze_momentum` there)."""
    s = parse_spec(spec)
    recipe = recipe or default_recipe(s)
    if epochs is not None:
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs}")
        recipe = replace(recipe, epochs=epochs)
    device = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(s)
    if recipe.init_range is not None:
        _uniform_init(model, recipe.init_range)
    if recipe.input_dropout_scale is not None and hasattr(model, "drop0"):
        model.drop0.scale = recipe.input_dropout_scale
    if init is not None:
        model.load_state_dict(init)
    model = model.to(device)
    x, y = data.images, data.labels
    if s.kind == "ae":
        _pretrain_autoencoder(model, x, recipe, gen, device, progress)
    if recipe.optimizer == "lbfgs":
        if objective is not None:
            raise ValueError(f"{s.name} is trained by full-batch L-BFGS; a training objective needs an SGD recipe.")
        if s.kind == "ae":
            # the encoder is frozen: compute its code once rather than at every L-BFGS evaluation (same optimum)
            with torch.no_grad():
                code = model[:-1](x.to(device))
            _lbfgs(nn.Sequential(OrderedDict(out=model.out)), code, y, recipe, device, s.name, progress)
        else:
            _lbfgs(model, x, y, recipe, device, s.name, progress)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        _sgd_epochs(model, params, x, y, recipe, recipe.epochs, gen, device, s.name, progress,
                    loss_fn=training_loss(s), objective=objective, on_epoch=on_epoch, resume=resume,
                    on_state=on_state, offset=offset, freeze_momentum=freeze_momentum)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return model, recipe


def recipe_dict(recipe: Recipe) -> dict[str, Any]:
    d = asdict(recipe)
    for name in _LATER_FIELDS:
        if d[name] == Recipe.__dataclass_fields__[name].default:
            del d[name]
    return d


__all__ = ["Recipe", "default_recipe", "fit", "decay_penalty",
           "load_mnist", "TrainingObjective", "StoredObjective", "EpochHook", "StateHook", "epoch_lr",
           "original_maxout_recipe", "batch_lr", "first_layer_weight", "epoch_momentum", "MomentumSGD"]
