"""Generic config machinery: strict YAML loading into frozen dataclasses, overrides, hashing.

A YAML file may name a ``base`` file (path relative to itself) whose values it overrides, as
DINOv2's experiment files do. Command-line overrides ``a.b=value`` come last; values are parsed
as YAML. Unknown keys raise :class:`ConfigError` naming the key and the file. Stage modules
define their own frozen dataclass configs; :mod:`weaksam.config` composes them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be loaded; the message names key and source."""


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: null is not allowed (in {source})")
    tp = inner
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r} (in {source})")
        return _build(tp, value, key, source)
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            value = [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r} (in {source})")
        return tuple(
            _coerce(v, a, f"{key}[{i}]", source)
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r} (in {source})")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r} (in {source})")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r} (in {source})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r} (in {source})")
        return float(value)
    if tp is str:
        if isinstance(value, Mapping | list):
            raise ConfigError(f"{key}: expected a string, got {value!r} (in {source})")
        return str(value)
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported field type {tp} (in {source})")


def _build(cls: type[T], data: Mapping[str, Any], prefix: str, source: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key {full!r} in {source}; known keys here: {known}")
        _, inner = _is_optional(hints[key])
        if dataclasses.is_dataclass(inner) and isinstance(value, Mapping):
            # A partial section starts from the field's own default (which may differ from
            # its class's defaults), not from the class's.
            base = _field_default(fields[key])
            if dataclasses.is_dataclass(base) and not isinstance(base, type):
                value = _deep_merge(to_dict(base), value)
        kwargs[key] = _coerce(value, hints[key], full, source)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix or 'config'}: {exc} (in {source})") from exc
    return obj


def _field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _read_yaml(path: str, seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """Read ``path`` with its ``base`` chain; return the merged dict and key → source file."""
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"config base cycle: {' -> '.join((*seen, path))}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    sources: dict[str, str] = {}
    base = data.pop("base", None)
    merged: dict[str, Any] = {}
    if base:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        merged, sources = _read_yaml(base_path, (*seen, path))
    for key in _flat_keys(data):
        sources[key] = path
    return _deep_merge(merged, data), sources


def _flat_keys(d: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in d.items():
        full = f"{prefix}.{k}" if prefix else str(k)
        keys.append(full)
        if isinstance(v, Mapping):
            keys.extend(_flat_keys(v, full))
    return keys


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b=value`` into (``["a", "b"]``, YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from exc
    return key.strip().split("."), value


def load_into(cls: type[T], path: str | None = None, overrides: Sequence[str] = ()) -> T:
    """Load ``cls`` from a YAML file (or defaults when ``path`` is None) plus overrides."""
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path:
        data, sources = _read_yaml(path)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            child = node.get(k)
            if not isinstance(child, dict):
                child = {}
                node[k] = child
            node = child
        node[keys[-1]] = value
        sources[".".join(keys)] = f"--set {text}"
    return _build_with_sources(cls, data, sources, path or "<defaults>")


def given_keys(path: str | None, overrides: Sequence[str] = ()) -> set[str]:
    """The dotted keys a file (with its ``base`` chain) and the overrides set explicitly."""
    keys: set[str] = set()
    if path:
        _, sources = _read_yaml(path)
        keys.update(sources)
    for text in overrides:
        parts, _ = parse_override(text)
        keys.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return keys


def _build_with_sources(
    cls: type[T], data: dict[str, Any], sources: dict[str, str], default: str
) -> T:
    # Find the first unknown key so the error names the file it came from.
    def check(c: Any, d: Mapping[str, Any], prefix: str) -> None:
        hints = typing.get_type_hints(c)
        names = {f.name for f in dataclasses.fields(c)}
        for k, v in d.items():
            full = f"{prefix}.{k}" if prefix else str(k)
            if k not in names:
                src = sources.get(full, default)
                raise ConfigError(
                    f"unknown key {full!r} in {src}; known keys here: {', '.join(sorted(names))}"
                )
            _, inner = _is_optional(hints[k])
            if dataclasses.is_dataclass(inner) and isinstance(v, Mapping):
                check(inner, v, full)

    check(cls, data, "")
    return _build(cls, data, "", default)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-serialisable dict of a config dataclass (tuples become lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    out = conv(cfg)
    assert isinstance(out, dict)
    return out


def from_dict(data: Mapping[str, Any], cls: type[T]) -> T:
    """Rebuild a config dataclass from :func:`to_dict`'s output (e.g. inside a Ray worker)."""
    return _build(cls, data, "", "<dict>")


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_hash(section: Any) -> str:
    """A short stable hash of a config (section), used to decide whether a stage is stale."""
    blob = json.dumps(
        to_dict(section) if dataclasses.is_dataclass(section) else section, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
