"""Defences built on the attacks: FGSM adversarial training and its noise controls (Goodfellow et al. 2015, §6)
and training on a refreshed pool of L-BFGS adversarial examples (Szegedy et al. 2014, §4.2).

This package sits above `attacks` (it calls them while training) and `models` (it trains through `models.fit`)."""

from .adversarial import PERTURBATIONS, Objective
from .pool import INPUT, AdversarialPool, PoolConfig, PoolTraining, train_with_pool

__all__ = ["Objective", "PERTURBATIONS", "PoolConfig", "AdversarialPool", "PoolTraining", "train_with_pool", "INPUT"]
