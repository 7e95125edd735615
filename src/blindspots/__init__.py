"""blindspots: find and measure the blind spots (adversarial examples) of neural networks."""

__version__ = "0.2.0"

from .data import ImageSet, fetch, load_mnist  # noqa: E402
from .errors import BlindspotsError  # noqa: E402
from .models import build_model, evaluate, load_model, parse_spec, train  # noqa: E402

__all__ = ["__version__", "load_mnist", "fetch", "ImageSet", "build_model", "parse_spec", "train",
           "load_model", "evaluate", "BlindspotsError"]
