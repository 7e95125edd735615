"""The §3, §4.3 and §4.2 sections of Szegedy et al. 2014, one module each, gathered for `experiment` and the tests."""

from ...analysis.bound_check import bound_check
from .adv_training import PLAIN, POOLED, adversarial_training_section, pool_report
from .common import (
           POOL_SPEC,
           SIZES,
           SPECTRAL_MODELS,
           UNIT_MODELS,
           PairSource,
           SectionSizes,
           sizes_for,
)
from .spectral import spectral_report, spectral_section
from .units import units_report, units_section

__all__ = ["SectionSizes", "SIZES", "sizes_for", "units_section", "spectral_section", "adversarial_training_section",
           "units_report", "spectral_report", "pool_report", "bound_check", "PairSource", "SPECTRAL_MODELS",
           "UNIT_MODELS", "POOL_SPEC", "PLAIN", "POOLED"]
