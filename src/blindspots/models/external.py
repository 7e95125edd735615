"""Models a user brings: a zoo spec ("FC100-100-10", trained or loaded from the store) or an import target
"package.module:factory" (a function returning an nn.Module) with weights from a .safetensors file — never
a pickle.

Skeleton: zoo specs only until the rest lands (issue 12)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .store import train


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to evaluate (eval mode, on its device), the name it is reported under, and where it came
    from: `source` is the zoo spec or the import target, `weights` the .safetensors path (or None)."""

    name: str
    module: nn.Module
    source: str
    weights: str | None = None
    weights_sha256: str | None = None


def load_user_model(target: str, weights: str | None = None, *, device: str = "cpu",
                    name: str | None = None) -> LoadedModel:
    """A zoo spec, or "package.module:factory" / "path/to/file.py:factory" with optional safetensors weights."""
    trained = train(target, device=device, progress=False)
    return LoadedModel(name or trained.spec.name, trained.model.eval(), target, str(trained.path), None)


__all__ = ["LoadedModel", "load_user_model"]
