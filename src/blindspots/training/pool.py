"""Training on a continually refreshed pool of adversarial examples (Szegedy et al. 2014, §4.2).

The paper trained a 100-100-10 net "with weight decay and a continually refreshed pool of adversarial examples
(generated for each layer's outputs)" and leaves the rest open. The choices made here:

- the pool starts empty; from the first step (or, with `start`, from that share of all training steps on) every
  `refresh_every` SGD steps the first `attack_size` images of the current clean
  minibatch (a uniform random draw from the training set, since minibatches walk a random permutation) are
  attacked on the *current* weights with the project's box-constrained L-BFGS (`attacks.lbfgs_attack`) and a
  short search over c, by default untargeted (the smallest perturbation to any wrong class: about half the
  distortion of a random target's, and in our runs random-target pools raised the test error) or towards a
  seeded random target != the true label (`targets="random"`);
- every successful perturbation that moved the point (x_adv != x) enters the pool with its TRUE label; the
  pool keeps the newest `capacity` examples per layer (first in, first out);
- each SGD step trains on the clean minibatch plus `round(mix · B)` examples drawn uniformly without replacement
  (from a generator of its own) from each layer's pool, or all of it while it holds fewer: the data loss is the
  mean cross-entropy over all of them, plus the recipe's weight decay. The clean minibatches, learning-rate
  schedule, decay and number of steps are exactly those of plain training with the same seed (the pool never
  touches the shuffling RNG), so "weight decay alone" and "weight decay + pool" differ only by the pool;
- layer-level examples (`layers` other than "input"): the output h of a hidden layer is attacked as the input
  of the layers above it, in the box [0, 1] (the range of a sigmoid layer; other layers are refused), and the
  pool's h_adv train those upper layers only. "input" is the image itself.

Use: `train_with_pool("FC100-100-10", load_mnist("train"), config=PoolConfig(), seed=0)`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import Criterion, Misclassification, TargetedMisclassification, lbfgs_attack, random_targets
from ..data import ImageSet
from ..errors import InputError, SpecError
from ..models.spec import ModelSpec, parse_spec
from ..models.train import EpochHook, Recipe, default_recipe, fit

INPUT = "input"
TARGETS = ("random", "any")
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class PoolConfig:
    """How the pool is filled, refreshed and mixed into training (see the module docstring)."""

    layers: tuple[str, ...] = (INPUT,)
    refresh_every: int = 20  # SGD steps between refreshes
    attack_size: int = 64  # images of the current minibatch attacked per refresh (at most the batch size)
    capacity: int = 1000  # newest examples kept per layer
    mix: float = 0.1  # pool examples per clean example in a minibatch, per layer (0.25 raised the error)
    search_steps: int = 1  # L-BFGS: bisections of c after the bracket
    bracket_steps: int = 3  # L-BFGS: ×10 / ÷10 steps of c to find the bracket
    max_iter: int = 20  # L-BFGS: iterations per solve
    targets: str = "any"  # "any": untargeted, the nearest wrong class; "random": a seeded target != label
    start: float = 0.0  # share of the training steps before the first refresh (0: from the first steps on)

    def __post_init__(self) -> None:
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise SpecError(f"layers must be a non-empty list of distinct layer names, got {self.layers!r}.")
        for name in ("refresh_every", "attack_size", "capacity", "max_iter"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise SpecError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        if self.targets not in TARGETS:
            raise SpecError(f"targets must be one of {', '.join(TARGETS)}, got {self.targets!r}.")
        if not (math.isfinite(self.mix) and self.mix > 0):
            raise SpecError(f"mix must be a positive number of pool examples per clean one, got {self.mix!r}.")
        if not (isinstance(self.start, (int, float)) and 0 <= self.start < 1):
            raise SpecError(f"start must be a share of the training steps in [0, 1), got {self.start!r}.")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layers": list(self.layers)}

    def describe(self) -> str:
        aim = "untargeted: any wrong class" if self.targets == "any" else "towards a seeded random target != label"
        begin = f"from {100 * self.start:.0f}% of the training steps on, " if self.start else ""
        return (f"{begin}every {self.refresh_every} SGD steps, {self.attack_size} images of the current minibatch are "
                f"attacked at layer(s) {', '.join(self.layers)} by box-constrained L-BFGS ({aim}; c search: "
                f"{self.bracket_steps} bracket + {self.search_steps} bisection steps, {self.max_iter} iterations per "
                f"solve) on the current weights; successful x_adv join a first-in-first-out pool of {self.capacity} "
                f"per layer with their true labels; each step trains on the clean minibatch plus {self.mix:g}× as "
                "many pool examples per layer (mean cross-entropy over all, plus weight decay)")


@dataclass
class _LayerPool:
    """The pool of one layer: examples (as the input of the layers above it), true labels, and counters."""

    head: nn.Module  # input image -> this layer's output (identity for "input")
    tail: nn.Module  # this layer's output -> logits
    x: Tensor | None = None
    y: Tensor | None = None
    attacked: int = 0
    added: int = 0
    distortion_sum: float = 0.0
    attack_seconds: float = 0.0

    def push(self, x: Tensor, y: Tensor, capacity: int) -> None:
        self.x = x if self.x is None else torch.cat([self.x, x])[-capacity:]
        self.y = y if self.y is None else torch.cat([self.y, y])[-capacity:]

    def summary(self) -> dict[str, Any]:
        return {"attacked": self.attacked, "added": self.added,
                "success_rate": self.added / self.attacked if self.attacked else float("nan"),
                "mean_rms_distortion": self.distortion_sum / self.added if self.added else float("nan"),
                "pool_size": 0 if self.y is None else int(self.y.numel()),
                "attack_seconds": round(self.attack_seconds, 3)}


def _split_at(model: nn.Module, layer: str) -> tuple[nn.Module, nn.Module]:
    """(head, tail) of an nn.Sequential around the output of `layer`; both share the model's parameters."""
    if not isinstance(model, nn.Sequential):
        raise SpecError(f"layer-level pools need an nn.Sequential model, got {type(model).__name__}.")
    if layer == INPUT:
        return nn.Identity(), model
    names = [name for name, _ in model.named_children()]
    if layer not in names:
        raise SpecError(f"the model has no layer {layer!r}; choose {INPUT!r} or one of {', '.join(names)}.")
    children = list(model.children())
    cut = names.index(layer) + 1
    if cut == len(children):
        raise SpecError(f"{layer!r} is the output layer; there is nothing above it to attack.")
    return nn.Sequential(*children[:cut]), nn.Sequential(*children[cut:])


class AdversarialPool:
    """The training objective of `fit` (its `objective` hook): clean minibatch + the pools, refreshed in place.

    Holds mutable state (the pools, a step counter, its own sampling generator), so use a fresh one per run.
    """

    def __init__(self, config: PoolConfig, seed: int = 0, total_steps: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.start_step = math.ceil(config.start * total_steps)  # the first refresh (with `start`: of total_steps)
        self.gen = torch.Generator().manual_seed(seed + 7919)  # the pool's own; the shuffling RNG is untouched
        self.step = 0
        self.refreshes = 0
        self.pools: dict[str, _LayerPool] = {}

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, gen: torch.Generator) -> Tensor:
        """Mean `loss_fn` over the clean minibatch and the pool examples drawn for it (weight decay is added by
        the caller). Refreshes the pools first when the step count says so."""
        if not self.pools:
            self.pools = {layer: _LayerPool(*_split_at(model, layer)) for layer in self.config.layers}
        since = self.step - self.start_step
        if self.step >= max(1, self.start_step) and since % self.config.refresh_every == 0:
            self.refresh(model, x, y)
        self.step += 1
        terms, count = [loss_fn(model(x), y) * y.numel()], y.numel()
        for pool in self.pools.values():
            size = 0 if pool.y is None else pool.y.numel()
            n_draw = min(size, max(1, round(self.config.mix * y.numel())))  # a small pool is not repeated
            if n_draw == 0:
                continue
            idx = torch.randperm(size, generator=self.gen)[:n_draw].to(pool.y.device)
            terms.append(loss_fn(pool.tail(pool.x[idx]), pool.y[idx]) * n_draw)
            count += n_draw
        return torch.stack(terms).sum() / count

    def refresh(self, model: nn.Module, x: Tensor, y: Tensor) -> None:
        """Attack the first `attack_size` images of this minibatch at every layer and push the successes."""
        cfg = self.config
        x, y = x[:cfg.attack_size].detach(), y[:cfg.attack_size]
        self.refreshes += 1
        for i, (layer, pool) in enumerate(self.pools.items()):
            t0 = time.perf_counter()
            was_training = model.training
            model.eval()
            with torch.no_grad():
                h = pool.head(x)
            model.train(was_training)
            if float(h.min()) < 0 or float(h.max()) > 1:
                raise InputError(f"the output of layer {layer!r} leaves [0, 1] (range {float(h.min()):.3g}.."
                                 f"{float(h.max()):.3g}); layer-level pools attack in the box [0, 1], so they need a "
                                 "sigmoid layer (or 'input').")
            if cfg.targets == "random":
                criterion: Criterion = TargetedMisclassification(
                    random_targets(y, seed=self.seed * 100_003 + self.refreshes * 101 + i), y)
            else:
                criterion = Misclassification(y)
            result = lbfgs_attack(pool.tail, h, criterion, search_steps=cfg.search_steps,
                                  bracket_steps=cfg.bracket_steps, max_iter=cfg.max_iter)
            keep = result.success & (result.rms > 0)
            pool.push(result.x_adv[keep].detach(), y[keep], cfg.capacity)
            pool.attacked += int(y.numel())
            pool.added += int(keep.sum())
            pool.distortion_sum += float(result.rms[keep].sum())
            pool.attack_seconds += time.perf_counter() - t0

    def summary(self) -> dict[str, Any]:
        return {"steps": self.step, "refreshes": self.refreshes,
                "layers": {layer: pool.summary() for layer, pool in self.pools.items()}}


@dataclass
class PoolTraining:
    """A model trained with the pool, its recipe, the pool's configuration and counters, and the wall time."""

    model: nn.Sequential
    recipe: Recipe
    config: PoolConfig
    stats: dict[str, Any] = field(default_factory=dict)
    wall_time: float = 0.0

    @property
    def attack_seconds(self) -> float:
        return float(sum(v["attack_seconds"] for v in self.stats["layers"].values()))


def train_with_pool(spec: str | ModelSpec, data: ImageSet, *, config: PoolConfig | None = None, seed: int = 0,
                    epochs: int | None = None, recipe: Recipe | None = None, device: str | torch.device = "cpu",
                    progress: bool = False, on_epoch: EpochHook | None = None) -> PoolTraining:
    """Train `spec` on `data` like `models.train.fit` with the same seed, epochs and recipe, plus the pool.

    Same arguments give the same weights (on CPU). The recipe must be an SGD one (the FC nets' default is)."""
    config = config or PoolConfig()
    s = parse_spec(spec)
    planned = replace(recipe or default_recipe(s), **({} if epochs is None else {"epochs": epochs}))
    pool = AdversarialPool(config, seed=seed, total_steps=planned.epochs * math.ceil(len(data) / planned.batch_size))
    t0 = time.perf_counter()
    model, used = fit(s, data, seed=seed, epochs=epochs, device=device, progress=progress, recipe=recipe,
                      objective=pool, on_epoch=on_epoch)
    return PoolTraining(model, used, config, pool.summary(), time.perf_counter() - t0)


__all__ = ["PoolConfig", "AdversarialPool", "PoolTraining", "train_with_pool", "INPUT"]
