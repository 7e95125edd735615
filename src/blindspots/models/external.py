"""Models a user brings: a zoo spec ("FC100-100-10", trained or loaded from the store) or an import target
"package.module:factory" / "path/to/file.py:factory" (a function returning an nn.Module) with weights from a
.safetensors file — never a pickle — and `check_outputs`, which refuses outputs attacks would misread."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from safetensors.torch import load
from torch import nn

from ..errors import CheckpointError, InputError, SpecError
from ..io import user_path
from .spec import parse_spec
from .store import train
from .zoo import build_model

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
CONVERT = ('convert it once, in an environment where you trust the file: `from safetensors.torch import save_file; '
           'save_file(model.state_dict(), "w.safetensors")`, then pass --weights w.safetensors')
SHOW = 5  # names listed per kind of mismatch


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to evaluate (eval mode, on its device), the name it is reported under, and where it came
    from: `source` is the zoo spec or the import target, `weights` the .safetensors path (or None)."""

    name: str
    module: nn.Module
    source: str
    weights: str | None = None
    weights_sha256: str | None = None
    code_sha256: str | None = None  # sha256 of a user factory's source file (part of the audit's model identity)


def load_user_model(target: str, weights: str | None = None, *, device: str | torch.device = "cpu",
                    name: str | None = None, progress: bool = False) -> LoadedModel:
    """A zoo spec (weights: the store's checkpoint, trained if missing, or the given file), or
    "package.module:factory" / "path/to/file.py:factory" with optional safetensors weights."""
    try:
        spec = parse_spec(target)
    except SpecError as exc:
        if ":" not in target:
            raise SpecError(f"--model {target!r} is not an import target (package.module:factory or "
                            f"path/to/file.py:factory; it has no ':') and not a zoo spec: {exc}") from None
        module, code = _build_from_import(target)
        label = target.rpartition(":")[2].split(".")[-1]
    else:
        code = None
        if weights is None:
            trained = train(spec, device=device, progress=progress)
            return LoadedModel(name or spec.name, trained.model.eval(), target, str(trained.path),
                               trained.meta.get("weights_sha256"))
        module, label = build_model(spec), spec.name
    sha = None if weights is None else load_weights(module, user_path(weights, "--weights"))
    return LoadedModel(name or label, module.to(device).eval(), target, None if weights is None else str(weights), sha,
                       code)


def _source_hash(obj: Any) -> str | None:
    """sha256 of the source file that defines obj (its module's file; the object's own source as a fallback)."""
    try:
        path = inspect.getsourcefile(obj)
        if path and Path(path).is_file():
            return hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()
    except (OSError, TypeError):
        return None


def _build_from_import(target: str) -> tuple[nn.Module, str | None]:
    """Import the module of "module:factory" (a module path or a .py file), resolve the factory and call it; the
    model and the sha256 of the factory's source file."""
    where, _, attr = target.rpartition(":")
    if not where or not attr:
        raise SpecError(f"--model {target!r}: need module:factory with both parts, e.g. mynets:small_cnn.")
    module = _import_file(where) if where.endswith(".py") or "/" in where or os.sep in where else _import_name(where)
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            owner = where if i == 0 else f"{where}:{'.'.join(attr.split('.')[:i])}"
            names = _callables(obj)
            close = difflib.get_close_matches(part, names, 1)
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise InputError(f"--model {target!r}: {owner} has no attribute {part!r}"
                             f"{f' (did you mean {close[0]!r}?)' if close else ''}; callables it has: "
                             f"{shown or 'none'}. Name the function that builds your model.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"--model {target!r}: {attr} is a {type(obj).__name__}, not callable; name a function "
                         "(or class) that builds the model with no arguments.")
    try:
        model = obj()
    except Exception as exc:
        raise InputError(f"--model {target!r}: calling {attr}() raised {type(exc).__name__}: {exc}. The factory is "
                         "called with no arguments; fix it or wrap it (def make(): return Net(...)).") from exc
    if not isinstance(model, nn.Module):
        raise InputError(f"--model {target!r}: {attr}() returned a {type(model).__name__}, not a torch.nn.Module; "
                         "make the factory return the model itself.")
    return model, _source_hash(obj)


def _import_name(name: str) -> ModuleType:
    """Import a module by name, with the current folder on sys.path (as `python -m` and uvicorn do)."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise InputError(f"cannot import module {name!r} ({type(exc).__name__}: {exc}). Run from the folder that "
                         f"holds {name.split('.')[0]}.py, install its package, or name the file: "
                         f"path/to/{name.split('.')[-1]}.py:factory.") from exc


def _import_file(where: str) -> ModuleType:
    """Load a module from a .py file (its folder goes on sys.path so it can import its neighbours)."""
    path = user_path(where, "--model").resolve()
    if not path.is_file():
        raise InputError(f"--model: {where} is not a file; give path/to/file.py:factory with an existing file.")
    # the key holds the file's content, so an edited file is imported afresh, not taken from sys.modules
    key = f"_blindspots_user_{hashlib.sha256(str(path).encode() + path.read_bytes()).hexdigest()[:10]}_{path.stem}"
    if key in sys.modules:
        return sys.modules[key]
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise InputError(f"--model: cannot load {path} as a Python module; give a .py file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses and typing resolve names through sys.modules while it runs
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[key]
        raise InputError(f"cannot import {path} ({type(exc).__name__}: {exc}); fix the file so "
                         f"`python {path}` runs.") from exc
    return module


def _callables(obj: Any) -> list[str]:
    """The public callables of a module or object, those defined in it first."""
    home = getattr(obj, "__name__", None)
    names = [n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None))]
    return sorted(names, key=lambda n: getattr(getattr(obj, n), "__module__", None) != home)


def load_weights(module: nn.Module, path: Path) -> str:
    """Load a .safetensors state dict into `module`, strictly, and return the sha256 of the bytes loaded; never
    unpickles. Each failure names its fix."""
    if not path.is_file():
        raise CheckpointError(f"--weights {path}: no such file; check the path.")
    pickled = (f"--weights {path}: a PyTorch pickle (torch.save), which can run arbitrary code when loaded, so "
               f"blindspots never loads one; {CONVERT}.")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(pickled)
    data = path.read_bytes()
    if not data:
        raise CheckpointError(f"--weights {path}: the file is empty; save the weights again ({CONVERT}).")
    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises SafetensorError / OSError / ValueError
        head = data[:4]
        if head == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
            raise CheckpointError(pickled) from None  # torch.save's zip, or a bare pickle, under another name
        raise CheckpointError(f"--weights {path}: not a readable safetensors file, corrupt or truncated ({exc}); "
                              f"save the weights again: {CONVERT}.") from None
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    shapes = [f"{k} {got[k]} vs {want[k]}" for k in sorted(set(want) & set(got)) if got[k] != want[k]]
    problems = [f"{len(v)} {what}: {', '.join(v[:SHOW])}{', ...' if len(v) > SHOW else ''}"
                for what, v in (("missing", missing), ("unexpected", unexpected),
                                ("with another shape (file vs model)", shapes)) if v]
    if problems:
        hint = _prefix_hint(set(want), set(got))
        raise CheckpointError(f"--weights {path} does not fit the model: tensors " + "; ".join(problems) +
                              f". Give the weights saved from this same architecture{hint}.")
    module.load_state_dict(tensors)
    return hashlib.sha256(data).hexdigest()


def _prefix_hint(want: set[str], got: set[str]) -> str:
    """A hint when the file's names carry a wrapper's prefix ("module." from DataParallel, "model." ...)."""
    for prefix in ("module.", "model.", "_orig_mod."):
        if got and all(k.startswith(prefix) for k in got) and {k[len(prefix):] for k in got} == want:
            return (f" (every name in the file starts with {prefix!r}: save model.{prefix.rstrip('.')}.state_dict() "
                    "instead, or strip the prefix)")
    return ""


def check_outputs(model: nn.Module, images: torch.Tensor, n_classes: int | None = None, *,
                  labels: torch.Tensor | None = None, batch: int = 64) -> dict[str, Any]:
    """Forward a small batch (no grad, eval mode, the mode restored) and refuse outputs attacks would misread:
    not [N, C] with C >= 2, non-finite, the wrong C, or probabilities. Returns the kind ("logits" or
    "log-probabilities") and numbers for the report's sanity line."""
    x = images[:batch]
    param = next(iter(model.parameters()), None)
    if param is not None:
        x = x.to(param.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
            again = model(x)
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise InputError(f"the model returns a {type(out).__name__}, not a tensor; make forward() return the "
                         "logits tensor [N, C] alone.")
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        hint = " (flatten the trailing 1s)" if out.ndim > 2 and out.shape[0] == x.shape[0] and out[0].numel() == \
            out.shape[1] else ""
        raise InputError(f"the model maps {tuple(x.shape)} images to {tuple(out.shape)}; it must return logits of "
                         f"shape [N, C] = [{x.shape[0]}, classes]{hint}.")
    c = int(out.shape[1])
    if c < 2:
        raise InputError(f"the model returns {c} output per image; return one logit per class (C >= 2), e.g. "
                         "[-z, z] for a single binary score z.")
    bad = ~torch.isfinite(out)
    if bool(bad.any()):
        raise InputError(f"{int(bad.sum())} of {out.numel()} outputs are NaN or infinite on the first {x.shape[0]} "
                         "images; check the model, its weights and the input scaling (--bounds, --mean/--std).")
    top = max(int(labels.max()) if labels is not None and labels.numel() else -1, (n_classes or 0) - 1)
    if top >= c:
        n_out = int((labels >= c).sum()) if labels is not None else None
        count = f"{n_out} of {labels.numel()} labels are" if n_out else "labels are"
        raise InputError(f"labels out of range: {count} ≥ {c} (up to {top}), but the model returns {c} classes, "
                         f"so labels must be 0..{c - 1}; fix the labels (or give the model matching this data).")
    if n_classes is not None and c != n_classes:
        raise InputError(f"the model returns {c} classes but the data has {n_classes}; give the model matching "
                         "this data (or data matching the model).")
    out = out.double()
    sums, lse = out.sum(1), out.logsumexp(1)
    stats = {"n_classes": c, "batch": int(x.shape[0]), "min": float(out.min()), "max": float(out.max()),
             "row_sum_spread": float(sums.max() - sums.min()), "row_sum_mean": float(sums.mean()),
             "logsumexp_max_abs": float(lse.abs().max()),
             "distinct_predictions": int(out.argmax(1).unique().numel()),
             "deterministic": bool(torch.equal(out, again.double()))}
    # imported here, not at module level: the model packages' stage keys must not follow the attacks
    from ..attacks.base import PROBABILITIES, looks_like_probabilities

    if looks_like_probabilities(out):  # the attacks' own refusal, word for word
        raise InputError(PROBABILITIES)
    kind = "log-probabilities" if bool((out <= 1e-6).all()) and stats["logsumexp_max_abs"] <= 1e-4 else "logits"
    return {"kind": kind, **stats}


__all__ = ["LoadedModel", "load_user_model", "load_weights", "check_outputs"]
