"""Generic config machinery: strict YAML loading into frozen dataclasses, overrides, hashing.

A YAML file may name a ``base`` file (path relative to itself) whose values it overrides, as
DINOv2's experiment files do. Command-line overrides ``a.b=value`` come last; values are parsed
as YAML. Unknown keys raise :class:`ConfigError` naming the key and the file. Stage modules
define their own frozen dataclass configs; :mod:`weaksam.config` composes them.

Values are checked while loading, before any stage runs: every float must be finite, and each
dataclass checks its own fields in ``__post_init__`` with the ``check_*`` helpers below, which
raise :class:`FieldError` naming the field. The loader turns that into a one-line
:class:`ConfigError` with the full dotted key, the rule, the value and where the value came
from (``proposals.batch_size must be >= 1, got 0 (from --set proposals.batch_size=0)``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be loaded; the message names key and source."""


# --------------------------------------------------------------------------- field checks


class FieldError(ValueError):
    """A field value that breaks a rule, raised by a config dataclass's ``__post_init__``.

    ``keys`` are relative to the dataclass that raised it (``"batch_size"``,
    ``"scale_jitter[1]"``, ``"train.branch_weights"`` for a nested section's field); the first
    is the one reported, the others are the fields the rule relates it to. ``template`` names
    each key as ``{key}`` and the value as ``{value}``; the loader renders it with the full
    dotted keys (:meth:`render`) and adds where the value came from.
    """

    def __init__(self, keys: str | Sequence[str], template: str, value: Any) -> None:
        self.keys: tuple[str, ...] = (keys,) if isinstance(keys, str) else tuple(keys)
        self.template = template
        self.value = value
        super().__init__(self.render())

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across Ray workers
        return (type(self), (self.keys, self.template, self.value))

    def render(self, prefix: str = "") -> str:
        """The message with every key prefixed by ``prefix`` (a section's dotted path)."""
        text = self.template
        for key in self.keys:
            text = text.replace("{" + key + "}", _join(prefix, key))
        return text.replace("{value}", repr(self.value))


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _fail(key: str, rule: str, value: Any, *related: str) -> NoReturn:
    raise FieldError((key, *related), "{" + key + "} " + rule + ", got {value}", value)


def _items(obj: Any, name: str) -> list[tuple[str, Any]]:
    """``(key, value)`` of field ``name``: one pair, or one per item of a tuple (``name[i]``);
    none for ``None`` (an optional field left unset)."""
    value = getattr(obj, name)
    if value is None:
        return []
    if isinstance(value, tuple | list):
        return [(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return [(name, value)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(key: str, value: Any) -> float:
    if not _is_number(value):
        _fail(key, "must be a number", value)
    if not math.isfinite(value):
        _fail(key, "must be a finite number", value)
    return float(value)


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def check_at_least(obj: Any, minimum: float, *names: str) -> None:
    """Each named field (or each item of a tuple field) is a finite number ``>= minimum``."""
    for name in names:
        for key, value in _items(obj, name):
            if _finite(key, value) < minimum:
                _fail(key, f"must be >= {_fmt(minimum)}", value)


def check_at_most(obj: Any, maximum: float, *names: str) -> None:
    """Each named field (or each item of a tuple field) is a finite number ``<= maximum``."""
    for name in names:
        for key, value in _items(obj, name):
            if _finite(key, value) > maximum:
                _fail(key, f"must be <= {_fmt(maximum)}", value)


def check_positive(obj: Any, *names: str) -> None:
    """Each named field (or tuple item) is a finite number ``> 0``."""
    for name in names:
        for key, value in _items(obj, name):
            if _finite(key, value) <= 0:
                _fail(key, "must be > 0", value)


def check_range(
    obj: Any,
    low: float,
    high: float,
    *names: str,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Each named field (or tuple item) lies in ``[low, high]`` (``(`` / ``)`` when open)."""
    rule = (
        f"must be in {'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"
    )
    for name in names:
        for key, value in _items(obj, name):
            v = _finite(key, value)
            if v < low or v > high or (low_open and v == low) or (high_open and v == high):
                _fail(key, rule, value)


def check_fraction(obj: Any, *names: str) -> None:
    """Each named field (or tuple item) is a fraction, probability or IoU in ``[0, 1]``."""
    check_range(obj, 0.0, 1.0, *names)


def check_choice(obj: Any, name: str, choices: Collection[str], noun: str = "") -> None:
    """Field ``name`` (or each item of it) is one of ``choices``; ``noun`` names the kind of
    value in the message (default: the field's name)."""
    known = list(choices)
    for key, value in _items(obj, name):
        if value not in known:
            raise FieldError(
                key,
                "{" + key + "}: unknown " + (noun or name) + f" {{value}}; known: {known}",
                value,
            )


def check_gpu_policy(obj: Any, *names: str) -> None:
    """Each named field is a GPU policy (``auto``/``true``/``false``,
    :mod:`weaksam.train.placement`); a YAML boolean is stored as its lower-case name."""
    from weaksam.train.placement import GPU_POLICIES

    for name in names:
        value = getattr(obj, name)
        text = str(value).strip().lower()
        if text not in GPU_POLICIES:
            rule = "{" + name + "}: must be one of " + f"{list(GPU_POLICIES)}, got {{value}}"
            raise FieldError(name, rule, value)
        object.__setattr__(obj, name, text)


def check_order(obj: Any, low: str, high: str) -> None:
    """Field ``low`` is ``<=`` field ``high`` (a min/max pair)."""
    lo, hi = getattr(obj, low), getattr(obj, high)
    if lo > hi:
        _fail(low, "must be <= {" + high + "} (" + repr(hi) + ")", lo, high)


def check_nonempty(obj: Any, *names: str) -> None:
    """Each named tuple or string field is not empty."""
    for name in names:
        value = getattr(obj, name)
        if len(value) == 0:
            _fail(name, "must not be empty", value)


def check_gpus(obj: Any, *names: str) -> None:
    """Each named field is a Ray GPU amount: ``>= 0``, and a whole number when above 1."""
    check_at_least(obj, 0, *names)
    for name in names:
        value = getattr(obj, name)
        if value > 1 and not float(value).is_integer():
            _fail(name, "must be a fraction <= 1 or a whole number", value)


_Check = Callable[[Any], None]
_EXTRA_CHECKS: dict[type, list[_Check]] = {}


def register_check(cls: type, check: _Check) -> None:
    """Run ``check(obj)`` on every ``cls`` the loader builds (for a class whose module cannot
    carry the checks in its ``__post_init__``); it raises :class:`FieldError`."""
    _EXTRA_CHECKS.setdefault(cls, []).append(check)


# --------------------------------------------------------------------------- loading


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


@dataclasses.dataclass(frozen=True)
class _Origin:
    """Where values came from: ``sources`` maps dotted keys to a file path or ``--set ...``;
    ``default`` stands for keys not in it (the file loaded, ``<defaults>``, ``<dict>``)."""

    default: str
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def _given(self, key: str) -> str | None:
        key = key.split("[", 1)[0]
        if key in self.sources:
            return self.sources[key]
        parts = key.split(".")
        for i in range(len(parts) - 1, 0, -1):  # a whole section set by one override
            src = self.sources.get(".".join(parts[:i]))
            if src is not None and _is_override(src):
                return src
        return None

    def where(self, *keys: str, section: str | None = None) -> str:
        """``in FILE`` or ``from --set ...`` for the first of ``keys`` given by an override,
        else the first given at all, else where ``section`` came from, else the default."""
        found = [s for s in (self._given(k) for k in keys) if s is not None]
        src = next((s for s in found if _is_override(s)), found[0] if found else None)
        if src is None and section is not None:
            return self.where_under(section)
        return _describe(src or self.default)

    def _under(self, prefix: str) -> list[str]:
        return [
            s
            for k, s in self.sources.items()
            if not prefix or k == prefix or k.startswith(prefix + ".")
        ]

    def where_under(self, prefix: str) -> str:
        """Where the values of section ``prefix`` came from: its last override, else the file
        of its first key, else the default."""
        under = self._under(prefix)
        overrides = [s for s in under if _is_override(s)]
        if overrides:
            return _describe(overrides[-1])
        return _describe(under[0] if under else self.default)

    def where_guess(self, key: str, section: str) -> str:
        """For a rule that names ``key`` but maybe not every field it reads: ``key``'s
        override, else the section's last override, else ``key``'s file, else the section's."""
        src = self._given(key)
        if src is not None and _is_override(src):
            return _describe(src)
        if any(_is_override(s) for s in self._under(section)):
            return self.where_under(section)
        return self.where(key, section=section)


def _is_override(source: str) -> bool:
    return source.startswith("--set ")


def _describe(source: str) -> str:
    if _is_override(source):
        return f"from {source}"
    if os.path.isabs(source):
        rel = os.path.relpath(source)
        if not rel.startswith(".."):
            source = rel
    return f"in {source}"


def _coerce(value: Any, tp: Any, key: str, origin: _Origin) -> Any:
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: null is not allowed ({origin.where(key)})")
    tp = inner
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r} ({origin.where(key)})")
        return _build(tp, value, key, origin)
    origin_tp = typing.get_origin(tp)
    if origin_tp is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            value = [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]", origin) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(
                f"{key}: expected {len(args)} values, got {value!r} ({origin.where(key)})"
            )
        return tuple(
            _coerce(v, a, f"{key}[{i}]", origin)
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin_tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r} ({origin.where(key)})")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(v, vt, f"{key}.{k}", origin) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r} ({origin.where(key)})")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r} ({origin.where(key)})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r} ({origin.where(key)})")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r} ({origin.where(key)})")
        return float(value)
    if tp is str:
        if isinstance(value, Mapping | list):
            raise ConfigError(f"{key}: expected a string, got {value!r} ({origin.where(key)})")
        return str(value)
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported field type {tp} ({origin.where(key)})")


def _build(cls: type[T], data: Mapping[str, Any], prefix: str, origin: _Origin) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = _join(prefix, str(key))
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key {full!r} in {origin.default}; known keys here: {known}")
        _, inner = _is_optional(hints[key])
        if dataclasses.is_dataclass(inner) and isinstance(value, Mapping):
            # A partial section starts from the field's own default (which may differ from
            # its class's defaults), not from the class's.
            base = _field_default(fields[key])
            if dataclasses.is_dataclass(base) and not isinstance(base, type):
                value = _deep_merge(to_dict(base), value)
        kwargs[key] = _coerce(value, hints[key], full, origin)
    try:
        obj = cls(**kwargs)
        for check in _EXTRA_CHECKS.get(cls, ()):
            check(obj)
    except FieldError as exc:
        keys = [_join(prefix, k) for k in exc.keys]
        raise ConfigError(f"{exc.render(prefix)} ({origin.where(*keys, section=prefix)})") from exc
    except (TypeError, ValueError) as exc:
        # A rule outside the helpers: name the field when the message starts with one.
        text = " ".join(str(exc).split())
        first = text.split(" ", 1)[0].rstrip(":,")
        if first in fields:
            full = _join(prefix, first)
            where = origin.where_guess(full, prefix)
            raise ConfigError(f"{full}{text[len(first) :]} ({where})") from exc
        where = origin.where_under(prefix)
        raise ConfigError(f"{prefix or 'config'}: {text} ({where})") from exc
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
        raise ConfigError(f"invalid YAML in {path}: {_one_line(exc)}") from exc
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


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


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
        raise ConfigError(f"override {text!r}: value is not valid YAML: {_one_line(exc)}") from exc
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
        joined = ".".join(keys)
        for key in [k for k in sources if k.startswith(joined + ".")]:
            del sources[key]  # the override replaced the whole mapping
        sources[joined] = f"--set {text}"
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
    return _build(cls, data, "", _Origin(default, sources))


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
    return _build(cls, data, "", _Origin("<dict>"))


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_hash(section: Any) -> str:
    """A short stable hash of a config (section), used to decide whether a stage is stale."""
    blob = json.dumps(
        to_dict(section) if dataclasses.is_dataclass(section) else section, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
