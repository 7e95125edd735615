"""Certified lower bounds and exact minimal adversarial perturbations (issue 18).

Every distortion an attack reports is an upper bound of the smallest adversarial perturbation. This package
gives the other side: certified bounds (interval bound propagation, CROWN, α-CROWN) that hold for every input
in an L∞ / L2 / L1 ball intersected with the value box, and the exact minimal L∞ / L1 / L2 distortion of a
piecewise-linear net (ReLU, maxout, max-pooling) as a mixed-integer program solved by HiGHS (L∞, L1) or, with its
convex quadratic distance, by SCIP (L2).

    certified radius ≤ exact minimal distortion ≤ distortion of any adversarial example found

auto_LiRPA (the reference CROWN implementation) is not a dependency: its 0.3 release needs torch < 1.13, and
this project pins torch 2.x. The bounds here are its algorithms re-implemented on a flat operation list
(network.py), one function per layer kind (ibp.py, relax.py), the backward pass (crown.py) kept apart from the
solver glue (milp.py).
"""

from .certify import METHODS, certified, certified_radius, hidden_units, margin_bounds, unstable_units
from .exact import EXACT_NORMS, ExactResult, attack_upper_bounds, exact_minimal, lp_margin_bounds
from .network import Network, UnsupportedLayerError, network

__all__ = ["METHODS", "certified", "certified_radius", "margin_bounds", "hidden_units", "unstable_units", "EXACT_NORMS",
           "ExactResult", "attack_upper_bounds", "exact_minimal", "lp_margin_bounds", "Network", "UnsupportedLayerError", "network"]
