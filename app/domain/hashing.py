"""Canonical bytes of an event and the hash chain that links a wallet's applied events."""

from __future__ import annotations

import hashlib
from dataclasses import fields
from json.encoder import encode_basestring_ascii as _encode_string  # json.dumps' own (C) escaper
from typing import Final

from app.domain.errors import NonCanonicalValue
from app.domain.events import EventBase

# The chain value before a wallet's first event: 32 zero bytes as 64 hex digits.
GENESIS_HASH: Final = "00" * 32


# Field names (without `hash`) of each event type; `dataclasses.fields` is too slow to call per event.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(event_type: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(event_type)
    if names is None:
        names = _FIELD_NAMES[event_type] = tuple(f.name for f in fields(event_type) if f.name != "hash")
    return names


# The layout of a document with these field names: its keys in sorted order ("kind" among them), each with the
# JSON text that precedes its value ('{"amount_minor":', ',"available_after_minor":', ...). A handful of
# layouts exist (one per event kind); the bound only protects against callers inventing key sets.
_LAYOUTS: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}
_LAYOUTS_MAX = 1024


def _layout(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    keys = sorted({"kind", *names})
    layout = tuple((key, ("{" if i == 0 else ",") + _encode_string(key) + ":") for i, key in enumerate(keys))
    if len(_LAYOUTS) >= _LAYOUTS_MAX:
        _LAYOUTS.clear()
    _LAYOUTS[names] = layout
    return layout


def canonical_bytes_of(kind: str, values: dict[str, object]) -> bytes:
    """Canonical bytes of an event of class `kind` whose fields (without `hash`) are `values`.

    JSON of {"kind": class name, every other field}, keys sorted, no whitespace, ASCII only: the bytes of
    `json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`, written here without
    building the document (the hash chain of every stored log depends on these exact bytes; the unit tests
    compare the two on arbitrary values). Values must be `str`, `int` or `None` (a float or bool has no
    single canonical form): others raise `NonCanonicalValue`.
    """
    names = tuple(values)
    layout = _LAYOUTS.get(names) or _layout(names)
    parts = []
    for key, prefix in layout:
        value = kind if key == "kind" and "kind" not in values else values[key]
        value_type = type(value)
        if value_type is str:
            parts.append(prefix + _encode_string(value))
        elif value_type is int:
            parts.append(prefix + int.__repr__(value))
        elif value is None:
            parts.append(prefix + "null")
        else:
            raise NonCanonicalValue(f"{kind}.{key} = {value!r} is not str, int or None")
    parts.append("}")
    return "".join(parts).encode("ascii")


def canonical_bytes(event: EventBase) -> bytes:
    """Deterministic bytes of `event` without its `hash` field (see `canonical_bytes_of`)."""
    values = {name: getattr(event, name) for name in _field_names(type(event))}
    return canonical_bytes_of(type(event).__name__, values)


def chain_hash_of(previous_hash: str, kind: str, values: dict[str, object]) -> str:
    """Hex sha256 of bytes.fromhex(previous_hash) + canonical bytes: the chain value after the event."""
    return hashlib.sha256(bytes.fromhex(previous_hash) + canonical_bytes_of(kind, values)).hexdigest()


def chain_hash(previous_hash: str, event: EventBase) -> str:
    """Hex sha256 of bytes.fromhex(previous_hash) + canonical_bytes(event): the chain value after `event`."""
    return hashlib.sha256(bytes.fromhex(previous_hash) + canonical_bytes(event)).hexdigest()
