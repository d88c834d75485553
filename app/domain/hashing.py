"""Canonical bytes of an event and the hash chain that links a wallet's applied events."""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
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


def canonical_bytes_of(kind: str, values: dict[str, object]) -> bytes:
    """Canonical bytes of an event of class `kind` whose fields (without `hash`) are `values`.

    JSON of {"kind": class name, every other field}, keys sorted, no whitespace, ASCII only. Values must be
    `str`, `int` or `None` (a float or bool has no single canonical form): others raise `NonCanonicalValue`.
    """
    for name, value in values.items():
        if value is not None and type(value) not in (str, int):
            raise NonCanonicalValue(f"{kind}.{name} = {value!r} is not str, int or None")
    document = {"kind": kind, **values}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


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
