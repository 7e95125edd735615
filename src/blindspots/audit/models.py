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
    adapted: tuple[str, ...] = ()  # how the audit reads the model's outputs, when not as plain logits (`adapt_outputs`)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "weights": self.weights,
                "weights_sha256": self.weights_sha256, "state_sha256": state_hash(self.module), "identity": self.key, "parameters": self.n_params,
                "macs_per_image": self.macs, "normalized": self.module is not self.inner,
                "class": type(self.inner).__name__, "outputs_adapted": list(self.adapted)}


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


def _first_tensor(out: Any) -> tuple[torch.Tensor | None, str]:
    """The logits in a tuple, list or dict output (its "logits" entry, else its first tensor), and where found."""
    if isinstance(out, dict):
        if isinstance(out.get("logits"), torch.Tensor):
            return out["logits"], "its 'logits' entry"
        items = [(f"its entry {k!r}", v) for k, v in out.items()]
    elif isinstance(out, (tuple, list)):
        items = [(f"its element {i}", v) for i, v in enumerate(out)]
    else:
        return None, ""
    for where, v in items:
        if isinstance(v, torch.Tensor):
            return v, where
    return None, ""


def adapt_outputs(module: nn.Module, name: str, images: torch.Tensor) -> tuple[str, ...]:
    """Make the user's module return a logits tensor, by a forward hook (its layer names stay the same): the
    first tensor of a tuple/list/dict output, and the logarithm of probabilities (log-probabilities are logits up
    to a per-row shift). Returns what was adapted, for the report; refuses what it cannot read, saying how to
    wrap the model."""
    from ..attacks.base import looks_like_probabilities

    old = getattr(module, "_blindspots_adapter", None)
    if old is not None:  # adapted by an earlier load of the same object
        return old[1]
    with torch.no_grad():
        out = module.eval()(images[:8])
    notes: list[str] = []
    picked = isinstance(out, (tuple, list, dict))
    if picked:
        tensor, where = _first_tensor(out)
        if tensor is None:
            raise InputError(f"model {name!r} returns a {type(out).__name__} without a tensor in it; wrap it so that "
                             "forward returns the logits tensor [N, C] alone, e.g. "
                             "class Wrapped(nn.Module): forward(x) = model(x)[0].")
        notes.append(f"forward returns a {type(out).__name__}: the audit takes {where} as the logits")
        out = tensor
    probs = isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] >= 2 and \
        bool(torch.isfinite(out).all()) and looks_like_probabilities(out.double())
    if probs:
        notes.append("outputs are probabilities: the audit attacks their logarithm (log-probabilities, logits up to "
                     "a per-row shift), clamped at 1e-30")
    if not notes:
        return ()

    def hook(_m: nn.Module, _inp: Any, result: Any) -> Any:
        if picked:
            result = _first_tensor(result)[0]
        return result.clamp(min=1e-30).log() if probs else result

    handle = module.register_forward_hook(hook)
    object.__setattr__(module, "_blindspots_adapter", (handle, tuple(notes)))
    return tuple(notes)


def check_layers(module: nn.Module, name: str, layer: str | None, bpda: tuple[str, ...]) -> None:
    """--layer and --bpda must name layers of the model (model.named_modules()): refused up front, naming them."""
    names = [n for n, _ in module.named_modules() if n]
    bad = [("--layer", layer)] if layer is not None and layer not in names else []
    bad += [("--bpda", b) for b in bpda if b not in names]
    if bad:
        listed = ", ".join(names[:60]) + (" …" if len(names) > 60 else "")
        raise InputError(f"model {name!r} has no layer {' and no layer '.join(f'{v!r} ({o})' for o, v in bad)}; its "
                         f"layers (model.named_modules()): {listed or '(none)'}.")


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
        sample = images[:8].to(config.device)
        try:
            adapted = adapt_outputs(inner, loaded.name, sample)
        except InputError:
            raise
        except Exception:  # noqa: BLE001 - the shape check below names the problem
            adapted = ()
        check_layers(inner, loaded.name, config.layer, config.bpda)
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
                              count_macs(module, sample), adapted))
    return out


__all__ = ["AuditModel", "load_models", "adapt_outputs", "check_layers", "check_input_shape", "state_hash", "behaviour_hash", "identity", "count_macs"]
