"""Attacks with one contract (Foolbox style): a classifier returning logits on images in [0, 1], a batch,
and a criterion in; an AttackResult out, whose success always comes from a fresh forward pass.

Minimal attacks (lbfgs_attack, lbfgs_all_targets, fgsm_min_epsilon) return one x_adv per image and can be
clipped to any list of budgets afterwards (AttackResult.clip_to); fixed-budget attacks (fgsm,
noise_attack) take a list of K budgets and return x_adv [K, N, ...] with success [K, N].
"""

from .base import AttackResult, attack_mode, distortions, verify
from .criteria import Criterion, Misclassification, TargetedMisclassification, random_targets
from .fgsm import fgsm, fgsm_min_epsilon
from .lbfgs import lbfgs_all_targets, lbfgs_attack
from .noise import gaussian_noise, magnify, noise_attack
from .storage import load_adversarial, load_adversarial_metadata, save_adversarial

__all__ = ["AttackResult", "Criterion", "Misclassification", "TargetedMisclassification", "random_targets",
           "attack_mode", "verify", "distortions", "lbfgs_attack", "lbfgs_all_targets", "fgsm",
           "fgsm_min_epsilon", "gaussian_noise", "magnify", "noise_attack", "save_adversarial",
           "load_adversarial", "load_adversarial_metadata"]
