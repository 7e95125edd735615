"""`blindspots reproduce szegedy2014`: Szegedy et al., Intriguing properties of neural networks (ICLR 2014), on MNIST.

Modules: `experiment` (profiles and the run), `tables` (Tables 1-3: training, L-BFGS attacks, transfer, Gaussian
controls), `report` (the report, from results.json alone), `units` (§3), `spectral` (§4.3), `adv_training` (§4.2),
`common` (run sizes and helpers shared by the sections)."""

from .experiment import PROFILES, Profile, Szegedy2014, reproduce
from .report import build_report, terminal_summary

__all__ = ["PROFILES", "Profile", "Szegedy2014", "build_report", "reproduce", "terminal_summary"]
