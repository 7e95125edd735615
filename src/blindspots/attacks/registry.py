"""Every attack by name, with its parameters: the one table the CLI and the API both dispatch through.

An `Attack` is a function (model, images, criterion[, budgets], **params) -> AttackResult. A minimal
attack returns one x_adv per image; a fixed-budget attack takes a list of K budgets (ε, or σ for noise)
and returns x_adv [K, N, ...]. Each is made by `base.attack`, the entry point they share. Parameters are the
attack function's keyword-only arguments, read from its signature, so a new parameter needs no registry change.
Add an attack by writing its run under `@attack(...)` and adding one AttackSpec.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor, nn

from ..errors import InputError
from .criteria import Criterion
from .apgd import apgd
from .cw import cw_l2
from .deepfool import deepfool
from .fgsm import fgsm, fgsm_min_epsilon
from .hopskipjump import hopskipjump
from .lbfgs import lbfgs_all_targets_run, lbfgs_attack
from .minimal import minimal_l2_attack
from .noise import noise_attack
from .pgd import pgd
from .result import AttackResult
from .square import square


class Attack(Protocol):
    """The attack contract: model, images within bounds, a criterion (and K budgets for a fixed-budget
    attack) in; an AttackResult whose success comes from a fresh forward pass out."""

    def __call__(self, model: nn.Module, images: Tensor, criterion: Criterion, /, *args: Any,
                 **params: Any) -> AttackResult: ...


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack: its name, function, kind, and the name of its budgets argument (fixed-budget
    attacks: "epsilons" or "sigmas"; None for a minimal attack)."""

    name: str
    fn: Attack
    description: str
    budgets: str | None = None

    @property
    def minimal(self) -> bool:
        return self.budgets is None

    @property
    def params(self) -> dict[str, Any]:
        """Keyword-only parameters and their defaults."""
        return {p.name: p.default for p in inspect.signature(self.fn).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def __call__(self, model: nn.Module, images: Tensor, criterion: Criterion,
                 budgets: Sequence[float] | None = None, **params: Any) -> AttackResult:
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise InputError(f"{self.name} has no parameter {', '.join(unknown)}; its parameters: "
                             f"{', '.join(f'{k}={v!r}' for k, v in self.params.items())}.")
        if self.minimal:
            if budgets is not None:
                raise InputError(f"{self.name} is a minimal attack and takes no budgets; clip its result with "
                                 f"result.at(budgets).")
            return self.fn(model, images, criterion, **params)
        if budgets is None:
            raise InputError(f"{self.name} is a fixed-budget attack: pass its {self.budgets}, e.g. [0.1, 0.3].")
        return self.fn(model, images, criterion, budgets, **params)


ATTACKS: dict[str, AttackSpec] = {spec.name: spec for spec in (
    AttackSpec("lbfgs", lbfgs_attack, "Szegedy et al.'s box-constrained L-BFGS, minimal L2 (c search)"),
    AttackSpec("lbfgs-all-targets", lbfgs_all_targets_run, "L-BFGS towards every other label, smallest kept"),
    AttackSpec("fgsm", fgsm, "Goodfellow et al.'s fast gradient sign method at each ε", "epsilons"),
    AttackSpec("fgsm-min", fgsm_min_epsilon, "per-image smallest FGSM ε, by bisection"),
    AttackSpec("pgd", pgd, "Madry et al.'s projected gradient descent (L∞ or L2) at each ε", "epsilons"),
    AttackSpec("apgd", apgd, "Croce & Hein's Auto-PGD (CE or DLR loss, L∞ or L2; targeted with a targeted "
               "criterion) at each ε", "epsilons"),
    AttackSpec("deepfool", deepfool, "Moosavi-Dezfooli et al.'s DeepFool, minimal L2"),
    AttackSpec("cw", cw_l2, "Carlini & Wagner's L2 attack, minimal (c search)"),
    AttackSpec("minimal-l2", minimal_l2_attack, "smallest L2 by exact box-constrained boundary projection"),
    AttackSpec("square", square, "Andriushchenko et al.'s Square Attack, gradient-free L∞ or L2 random search at "
               "each ε", "epsilons"),
    AttackSpec("hopskipjump", hopskipjump, "Chen et al.'s HopSkipJump, decision-based (top-1 label only) minimal L2 or "
               "L∞"),
    AttackSpec("noise", noise_attack, "Gaussian noise of per-pixel σ (a baseline)", "sigmas"),
)}


def get_attack(name: str) -> AttackSpec:
    """The registered attack called `name`, else an InputError listing them."""
    try:
        return ATTACKS[name]
    except KeyError:
        raise InputError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}.") from None


def run_attack(name: str, model: nn.Module, images: Tensor, criterion: Criterion,
               budgets: Sequence[float] | None = None, **params: Any) -> AttackResult:
    """Run a registered attack: `run_attack("pgd", model, x, Misclassification(y), [0.3], steps=40)`."""
    return get_attack(name)(model, images, criterion, budgets, **params)
