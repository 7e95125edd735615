"""Attacks with one contract (Foolbox style): a classifier returning logits, a batch of images within
`bounds` (default [0, 1]) and a criterion in; an AttackResult out, whose success always comes from a
fresh forward pass.

Every attack is in the registry (`ATTACKS`, `get_attack(name)`, `run_attack(name, ...)`), which the CLI
uses too. Minimal attacks (lbfgs, deepfool, cw, fgsm-min, hopskipjump) return one x_adv per image, which
`AttackResult.at(budgets)` projects onto any list of budgets; fixed-budget attacks (fgsm, pgd, square, noise)
take K budgets and return x_adv [K, N, ...] with success [K, N] (the shape rule: attacks.result).
"""

from .apgd import apgd
from .base import FunctionModel, Normalized, attack_mode, distortions, recheck, verify
from .criteria import Criterion, Misclassification, TargetedMisclassification, random_targets
from .cw import cw_l2
from .deepfool import deepfool
from .fgsm import fgsm, fgsm_min_epsilon
from .hopskipjump import hopskipjump
from .lbfgs import lbfgs_all_targets, lbfgs_attack
from .noise import gaussian_noise, magnify, noise_attack
from .pgd import pgd
from .registry import ATTACKS, Attack, AttackSpec, get_attack, run_attack
from .result import AttackResult
from .square import square
from .storage import load_adversarial, load_adversarial_metadata, save_adversarial

__all__ = ["AttackResult", "Criterion", "Misclassification", "TargetedMisclassification", "random_targets",
           "attack_mode", "verify", "recheck", "distortions", "Normalized", "FunctionModel", "lbfgs_attack",
           "lbfgs_all_targets", "fgsm", "fgsm_min_epsilon", "pgd", "deepfool", "cw_l2", "gaussian_noise", "magnify",
           "noise_attack", "square", "apgd", "hopskipjump", "Attack", "AttackSpec", "ATTACKS", "get_attack", "run_attack", "save_adversarial",
           "load_adversarial", "load_adversarial_metadata"]
