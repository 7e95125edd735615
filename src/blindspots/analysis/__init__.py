"""Analyses of trained models: single units versus random directions (§3) and per-layer Lipschitz bounds
(§4.3) of Szegedy et al. 2014: the bounds (`spectral`, the convolution's in `conv_bound`) and the checks that
verify them (`bound_check`)."""

from .bound_check import (bound_check, empirical_ratio, explicit_operator_norm, local_lipschitz,
                          power_iteration_norm)
from .conv_bound import conv2d_operator_norm
from .spectral import LayerBound, format_bound_table, layer_bounds, lipschitz_bound, sequential_layers
from .units import (UnitAnalysis, ambiguous_top_k, default_layers, label_purity, layer_activations,
                    pixel_coherence, top_k_images, unit_analysis)

__all__ = ["LayerBound", "layer_bounds", "lipschitz_bound", "conv2d_operator_norm", "power_iteration_norm",
           "explicit_operator_norm", "empirical_ratio", "local_lipschitz", "bound_check", "format_bound_table",
           "sequential_layers", "UnitAnalysis", "unit_analysis", "top_k_images", "layer_activations",
           "default_layers", "label_purity", "pixel_coherence", "ambiguous_top_k"]
