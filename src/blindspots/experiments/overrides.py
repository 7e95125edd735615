"""A reproduction's profile as the command line picks it: a preset of PROFILES, `--n-attack`, and `--set FIELD=VALUE`
overrides, each value read as the type its field declares (typing.get_type_hints), so a value that does not fit is
refused, naming the field and the type, before any stage runs.

Syntax of a value, by the field's type: a number; true/false; none (for an optional field); a comma-separated list
(tuples: `nets=maxout,maxout_adv`, empty for none); KEY=VALUE pairs separated by commas (option dictionaries:
`lbfgs=search_steps=2,max_iter=50` sets all of them, empty for none). A dot reaches into a group or a dictionary:
`s42.seeds=1`, `s42.pool.mix=0.05`, `lbfgs.max_iter=50` (one option, the others kept)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from ..errors import SpecError

P = TypeVar("P")
MNIST_TEST = 10_000
_NONE = ("none", "null")
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def pick_profile(profiles: Mapping[str, P], name: str, n_attack: int | None = None,
                 overrides: Mapping[str, str] | None = None) -> P:
    """The named run size, with its number of attacked test images overridden by n_attack if given, and any field
    overridden from text (`--set FIELD=VALUE`, the module's syntax). A top-level field a profile class lists in its
    FOLLOWERS also sets the nested fields that follow it, unless `overrides` sets those too."""
    if name not in profiles:
        raise SpecError(f"unknown profile {name!r}; choose one of {', '.join(profiles)}.")
    prof = profiles[name]
    if n_attack is not None:
        if not 0 < n_attack <= MNIST_TEST:
            raise SpecError(f"--n-attack must be between 1 and {MNIST_TEST} (the MNIST test set), got {n_attack}.")
        prof = dataclasses.replace(prof, n_attack=n_attack)  # type: ignore[type-var]
    given = dict(overrides or {})
    for key, followers in getattr(type(prof), "FOLLOWERS", {}).items():
        if key in (overrides or {}):
            for nested in followers:
                given.setdefault(nested, given[key])
    for key, text in given.items():
        prof = set_field(prof, key, text)
    return prof


def set_field(obj: P, key: str, text: str) -> P:
    """`obj` (a dataclass) with the field at dotted `key` set from `text`, read as that field's type."""
    return _set(obj, key.split("."), text, key)


def _set(obj: Any, path: list[str], text: str, key: str) -> Any:
    hints = _settable(obj, path[0], key)
    name, kind = path[0], hints[path[0]]
    current = getattr(obj, name)
    if len(path) == 1:
        value = parse_value(text, kind, key)
    elif dataclasses.is_dataclass(current):
        value = _set(current, path[1:], text, key)
    elif _is_mapping(kind) and len(path) == 2:  # one option of a dictionary, the others kept
        value = {**current, **parse_value(f"{path[1]}={text}", kind, key.rsplit(".", 1)[0])}
    else:
        groups = [f for f, t in hints.items() if dataclasses.is_dataclass(getattr(obj, f)) or _is_mapping(t)]
        raise SpecError(f"--set {key}=…: {name!r} is not a group; groups: {', '.join(groups) or '(none)'}.")
    try:
        return dataclasses.replace(obj, **{name: value})
    except SpecError as exc:
        raise SpecError(f"--set {key}={text}: {exc}") from None


def _settable(obj: Any, name: str, key: str) -> dict[str, Any]:
    """The field types of dataclass `obj` that --set may change (not `name`, which says which preset it is)."""
    every = get_type_hints(type(obj))
    hints = {f.name: every[f.name] for f in dataclasses.fields(obj) if f.init and f.name != "name"}
    if name not in hints:
        raise SpecError(f"--set {key}=…: no field {name!r} there; fields: {', '.join(hints)}.")
    return hints


def parse_value(text: str, kind: Any, key: str) -> Any:
    """`text` read as a value of type `kind` (int, float, bool, str, Literal, Optional/unions, tuples, dicts and
    TypedDicts of those, Any); SpecError naming the field `key` and the type if it is not one."""
    t = text.strip()
    origin, args = get_origin(kind), get_args(kind)
    try:
        if kind is Any:
            return _any(t)
        if origin in (Union, types.UnionType):
            if type(None) in args and t.lower() in _NONE:
                return None
            for arm in (a for a in args if a is not type(None)):
                try:
                    return parse_value(t, arm, key)
                except SpecError:
                    continue
            raise ValueError(t)
        if kind is bool:
            if t.lower() not in _TRUE + _FALSE:
                raise ValueError(t)
            return t.lower() in _TRUE
        if kind in (int, float, str):
            return kind(t)
        if origin is typing.Literal:
            match = [a for a in args if str(a) == t]
            if not match:
                raise ValueError(t)
            return match[0]
        if origin is tuple:
            items = [v.strip() for v in t.split(",") if v.strip()]
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(parse_value(v, args[0], key) for v in items)
            if len(items) != len(args):
                raise ValueError(t)
            return tuple(parse_value(v, a, key) for v, a in zip(items, args))
        if _is_mapping(kind):
            return _mapping(t, kind, key)
    except ValueError:
        raise SpecError(f"--set {key}={text}: expected {describe(kind)}.") from None
    if dataclasses.is_dataclass(kind):
        first = dataclasses.fields(kind)[0].name
        raise SpecError(f"--set {key}=…: {key} is a group; set one of its fields, e.g. --set {key}.{first}=….")
    raise SpecError(f"--set {key}=…: a field of type {describe(kind)} cannot be set from the command line.")


def _mapping(t: str, kind: Any, key: str) -> dict[str, Any]:
    """KEY=VALUE pairs separated by commas: each value read as the TypedDict's type for its key (Any elsewhere)."""
    options = get_type_hints(kind) if typing.is_typeddict(kind) else None
    value_type = get_args(kind)[1] if len(get_args(kind)) == 2 else Any
    out: dict[str, Any] = {}
    for item in (v.strip() for v in t.split(",") if v.strip()):
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not name:
            raise ValueError(item)
        if options is not None and name not in options:
            raise SpecError(f"--set {key}=…: no option {name!r}; options: {', '.join(options)}.")
        out[name] = parse_value(value, value_type if options is None else options[name], f"{key}.{name}")
    return out


def _any(t: str) -> Any:
    """A value of no declared type: none, true/false, an integer, a float, else the text."""
    if t.lower() in _NONE:
        return None
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    for read in (int, float):
        try:
            return read(t)
        except ValueError:
            pass
    return t


def _is_mapping(kind: Any) -> bool:
    return typing.is_typeddict(kind) or get_origin(kind) in (dict, Mapping)


def describe(kind: Any) -> str:
    """A type as the --set syntax writes it, for error messages."""
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, types.UnionType):
        return " or ".join("none" if a is type(None) else describe(a) for a in args)
    if origin is tuple:
        inner = describe(args[0]) if len(args) == 2 and args[1] is Ellipsis else ", ".join(map(describe, args))
        return f"a comma-separated list of {inner}"
    if typing.is_typeddict(kind):
        return f"KEY=VALUE pairs separated by commas, KEY one of {', '.join(get_type_hints(kind))}"
    if _is_mapping(kind):
        return "KEY=VALUE pairs separated by commas"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if kind is bool:
        return "true or false"
    return {int: "an integer", float: "a number", str: "text"}.get(kind, getattr(kind, "__name__", str(kind)))


__all__ = ["pick_profile", "set_field", "parse_value", "describe", "MNIST_TEST"]
