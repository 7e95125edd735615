"""The audited models: loaded (zoo spec or import target + weights), wrapped in attacks.Normalized when the data
needs normalising, checked against the data's shape, identified by a hash of their weights (the stage keys)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attacks import Normalized
from ..errors import InputError
from ..models.external import LoadedModel, load_user_model
from .config import AuditConfig


@dataclass
class AuditModel:
    """A model under audit: `module` is what attacks see (data space → logits), `inner` the user's own module."""

    name: str
    module: nn.Module
    inner: nn.Module
    source: str
    weights: str | None
    weights_sha256: str | None
    key: str  # the model's identity: sha256 of its state, behaviour, structure and code (`identity`)
    n_params: int
    macs: int  # multiply-adds per image in Linear and Conv2d layers

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "weights": self.weights,
                "weights_sha256": self.weights_sha256, "state_sha256": state_hash(self.module), "identity": self.key, "parameters": self.n_params,
                "macs_per_image": self.macs, "normalized": self.module is not self.inner,
                "class": type(self.inner).__name__}


def state_hash(module: nn.Module) -> str:
    """sha256 of a module's state (names, dtypes, shapes and bytes of every parameter and buffer)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


PROBE_SEED, PROBE_IMAGES = 20_260_101, 8


def behaviour_hash(module: nn.Module, shape: tuple[int, ...], bounds: tuple[float, float]) -> str:
    """sha256 of the model's logits (4 significant digits) on a fixed seeded batch of uniform images within bounds;
    "random outputs" when two passes disagree (a randomised model is then identified by its state and code)."""
    gen = torch.Generator().manual_seed(PROBE_SEED)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    x = (bounds[0] + (bounds[1] - bounds[0]) * torch.rand((PROBE_IMAGES, *shape), generator=gen)).to(device)
    with torch.no_grad():
        was = module.training
        module.eval()
        try:
            a, b = module(x), module(x)
        finally:
            module.train(was)
    if not torch.equal(a, b):
        return "random outputs"
    return hashlib.sha256(" ".join(f"{v:.4g}" for v in a.double().flatten().tolist()).encode()).hexdigest()


def identity(module: nn.Module, shape: tuple[int, ...], bounds: tuple[float, float], code: str | None) -> str:
    """A model's identity in every stage key: its state, its behaviour on a probe batch, its module structure (repr)
    and its factory's source (a user factory), so an edited model recomputes its stages even with the same weights."""
    h = hashlib.sha256()
    for part in (state_hash(module), behaviour_hash(module, shape, bounds), repr(module), code or ""):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def count_macs(module: nn.Module, sample: torch.Tensor) -> int:
    """Multiply-adds of one image through the model's Linear and Conv2d layers (a deterministic cost proxy)."""
    total = [0]

    def hook(layer: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        if isinstance(layer, nn.Linear):
            total[0] += layer.in_features * layer.out_features
        elif isinstance(layer, nn.Conv2d):
            k = layer.in_channels // layer.groups * int(torch.tensor(layer.kernel_size).prod())
            total[0] += int(out[0].numel()) * k

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            module(sample[:1])
    finally:
        for h in handles:
            h.remove()
    return total[0]


def _first_layer(module: nn.Module) -> str:
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            return f"its first layer {name} is Linear(in_features={m.in_features}), i.e. {m.in_features} values per image"
        if isinstance(m, nn.Conv2d):
            return f"its first layer {name} is Conv2d with {m.in_channels} input channel(s)"
    return "its expected input shape is unknown"


def check_input_shape(model: nn.Module, name: str, images: torch.Tensor) -> None:
    """A clear InputError (both shapes named) when the model cannot take the data's images."""
    shape = tuple(images.shape[1:])
    try:
        with torch.no_grad():
            model.eval()(images[:2])
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"model {name!r} does not accept the data's images of shape {shape} (C, H, W), "
                         f"{int(images[0].numel())} values each: "
                         f"{_first_layer(model)} (torch: {first}). Give --data with images of the shape the model "
                         "was built for, or the model that fits this data.") from None


def load_models(config: AuditConfig, images: torch.Tensor) -> list[AuditModel]:
    """Every model of the config, loaded, wrapped (mean/std), shape-checked, named uniquely."""
    out: list[AuditModel] = []
    seen: dict[str, int] = {}
    for item in config.models:
        if isinstance(item, LoadedModel):
            loaded = item
        else:
            target, weights = item
            loaded = load_user_model(target, weights, device=config.device)
        if loaded.weights is None and not isinstance(item, LoadedModel) and ":" in loaded.source:
            print(f"blindspots: warning: --model {loaded.source} has no --weights; auditing the factory's own "
                  "(untrained?) initialisation.")
        inner = loaded.module.to(config.device).eval()
        module = inner if config.mean is None else Normalized(inner, config.mean, config.std).to(config.device).eval()
        sample = images[:2].to(config.device)
        check_input_shape(module, loaded.name, sample)
        name = loaded.name
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}#{seen[name]}"
        out.append(AuditModel(name, module, inner, loaded.source, loaded.weights, loaded.weights_sha256,
                              identity(module, tuple(images.shape[1:]), config.bounds, loaded.code_sha256),
                              sum(p.numel() for p in module.parameters()),
                              count_macs(module, sample)))
    return out


__all__ = ["AuditModel", "load_models", "check_input_shape", "state_hash", "behaviour_hash", "identity", "count_macs"]
