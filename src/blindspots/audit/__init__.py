"""`blindspots audit`: one command from a model (and its weights) to a robustness report — clean accuracy, minimal
perturbations (L2, L∞), robust accuracy against ε, transfer between models, Lipschitz bounds with certified radii,
single units vs random directions, and sanity checks of the attacks themselves.

config (what to audit, how hard), engine (`run_audit`: resumable stages, torchrun-ready), attacks and analysis
(the stages), sanity (PASS/FLAG lines), report and figures (a pure function of results.json)."""

from __future__ import annotations

from .config import CHUNK, DEFAULT_EPS_L2, DEFAULT_EPS_LINF, AuditConfig, Effort
from .engine import run_audit
from .report import build_report, write_all
from .sanity import check_monotone, monotone_violations, sanity_lines

__all__ = ["AuditConfig", "Effort", "run_audit", "build_report", "write_all", "sanity_lines", "check_monotone",
           "monotone_violations", "CHUNK", "DEFAULT_EPS_LINF", "DEFAULT_EPS_L2"]
