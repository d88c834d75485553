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


def canonical_bytes(event: EventBase) -> bytes:
    """Deterministic bytes of `event` without its `hash` field.

    JSON of {"kind": class name, every other field}, keys sorted, no whitespace, ASCII only. Values must be
    `str`, `int` or `None` (a float or bool has no single canonical form): others raise `NonCanonicalValue`.
    """
    document: dict[str, object] = {"kind": type(event).__name__}
    for field in fields(event):
        if field.name == "hash":
            continue
        value = getattr(event, field.name)
        if value is not None and type(value) not in (str, int):
            raise NonCanonicalValue(f"{type(event).__name__}.{field.name} = {value!r} is not str, int or None")
        document[field.name] = value
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def chain_hash(previous_hash: str, event: EventBase) -> str:
    """Hex sha256 of bytes.fromhex(previous_hash) + canonical_bytes(event): the chain value after `event`."""
    return hashlib.sha256(bytes.fromhex(previous_hash) + canonical_bytes(event)).hexdigest()
