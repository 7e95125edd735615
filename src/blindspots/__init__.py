"""blindspots: find and measure the blind spots (adversarial examples) of neural networks."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# The public names and the subpackage each comes from, imported on first use: `import blindspots.cli` stays light
# (no torch), so the command line's error handling, Ctrl-C included, covers the seconds torch takes to import.
_EXPORTS = {"load_mnist": "data", "fetch": "data", "ImageSet": "data", "BlindspotsError": "errors",
            "build_model": "models", "parse_spec": "models", "train": "models", "load_model": "models",
            "evaluate": "models"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", "load_mnist", "fetch", "ImageSet", "build_model", "parse_spec", "train",
           "load_model", "evaluate", "BlindspotsError"]
