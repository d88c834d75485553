"""What the processor accepts from a topic: decode, then check the fields the domain cannot judge.

A message that fails here is poison: it goes to the DLQ with `error.code` and `error.detail` and the
partition moves on. Business refusals (amounts, funds, status) are not poison: `decide` turns them
into `CommandRejected` events.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

from app import identity
from app.codec import CodecError, CommandCodec
from app.domain import commands as c
from app.identity import PUBLIC_COMMAND_ID_RE  # noqa: F401  (re-exported: the web validates with it)

WALLET_ID_RE = re.compile(identity.WALLET_ID_PATTERN)
HOLD_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
CURRENCY_RE = re.compile(r"[A-Z]{3}")
# Longest reference, description, owner id or reason: part of the contract, not a tunable (the read model's
# columns are VARCHAR(1024), migrations/versions/0001_read_model.py; the OpenAPI document and PRODUCERS.md say it).
TEXT_LENGTH_MAX = 1024

# DLQ reason codes set here (the codec adds TRUNCATED, BAD_MAGIC_BYTE, UNKNOWN_SCHEMA, UNDECODABLE; command
# identity adds RESERVED_COMMAND_ID and INTERNAL_ID_MISMATCH, app/identity.py).
INVALID_FIELD = "INVALID_FIELD"
KEY_MISMATCH = "KEY_MISMATCH"
INTERNAL_KIND_REFUSED = "INTERNAL_KIND_REFUSED"
DUPLICATE_COMMAND_CONFLICT = "DUPLICATE_COMMAND"
# Kafka header of every event: the fingerprint of the command it answers (conflict checks after replay).
FINGERPRINT_HEADER = "command.fingerprint"


# Fields that say when a command was sent, not what it asks. A hold's expiry is one of them: over HTTP
# it is the request time plus `expires_in_s`, so a retry of the same request carries a later one.
_NOT_FINGERPRINTED = frozenset({"timestamp_ms", "expires_at_ms"})



class _Fields(NamedTuple):
    """The names a command type has, looked up once per type (not once per message)."""

    fingerprinted: tuple[str, ...]
    wallet_references: tuple[str, ...]  # other wallets it names
    has_hold_id: bool
    has_currency: bool
    texts: tuple[str, ...]


_FIELDS_OF: dict[type, _Fields] = {}
_WALLET_REFERENCES = ("destination_wallet_id", "source_wallet_id")
_TEXTS = ("owner_id", "reference", "description", "reason", "reason_code")


def _fields_of(command_type: type) -> _Fields:
    found = _FIELDS_OF.get(command_type)
    if found is None:
        names = tuple(command_type.__dataclass_fields__)
        found = _FIELDS_OF[command_type] = _Fields(
            fingerprinted=tuple(name for name in names if name not in _NOT_FINGERPRINTED),
            wallet_references=tuple(name for name in _WALLET_REFERENCES if name in names),
            has_hold_id="hold_id" in names, has_currency="currency" in names,
            texts=tuple(name for name in _TEXTS if name in names))
    return found


def fingerprint(command: c.CommandBase) -> str:
    """A short digest of what the command asks (kind, wallet, body; not its timestamp or hold expiry).

    The same command id with another fingerprint is a conflict, not a retry.
    """
    body = [type(command).__name__]
    body += [repr(getattr(command, name)) for name in _fields_of(type(command)).fingerprinted]
    return hashlib.blake2b("\x1f".join(body).encode(), digest_size=8).hexdigest()


def _check(condition: bool, detail: str) -> None:
    if not condition:
        raise CodecError(INVALID_FIELD, detail)


def validate(command: c.CommandBase, key: bytes | None, *, public: bool) -> None:
    """Raise CodecError unless the command's identifiers and texts are well formed."""
    if public and isinstance(command, c.INTERNAL_COMMAND_TYPES):
        raise CodecError(INTERNAL_KIND_REFUSED,
                         f"{type(command).__name__} is internal and refused on the public topic")
    _check(WALLET_ID_RE.fullmatch(command.wallet_id) is not None, "wallet_id must match [A-Za-z0-9_-]{1,64}")
    if key is not None and key != command.wallet_id.encode():
        raise CodecError(KEY_MISMATCH, "the Kafka key must be the wallet_id (or absent: then the body's "
                                       "wallet_id routes the command)")
    _check(0 <= command.timestamp_ms < 2**53, "timestamp_ms out of range")
    fields = _fields_of(type(command))
    for name in fields.wallet_references:
        value = getattr(command, name)
        if value is not None:
            _check(WALLET_ID_RE.fullmatch(value) is not None, f"{name} must match [A-Za-z0-9_-]{{1,64}}")
    if fields.has_hold_id and command.hold_id is not None:
        _check(HOLD_ID_RE.fullmatch(command.hold_id) is not None, "hold_id must match [A-Za-z0-9_.:-]{1,64}")
    if fields.has_currency and command.currency is not None:
        _check(CURRENCY_RE.fullmatch(command.currency) is not None, "currency must be 3 upper-case letters")
    for name in fields.texts:
        value = getattr(command, name)
        if value is not None:
            _check(len(value) <= TEXT_LENGTH_MAX, f"{name} longer than {TEXT_LENGTH_MAX} characters")
    try:
        if public:
            identity.check_public(command.command_id)
        else:
            _check_internal_id(command)
    except identity.IdentityRefused as refused:
        raise CodecError(refused.code, refused.detail) from None


def _check_internal_id(command: c.CommandBase) -> None:
    """The internal topic carries only the processor's own commands, each under the id of its cause."""
    if isinstance(command, c.TransferCredit):
        identity.check_leg(command.command_id, identity.CREDIT, command.source_wallet_id, command.transfer_id,
                           command.timestamp_ms)
    elif isinstance(command, c.TransferRefund):
        identity.check_leg(command.command_id, identity.REFUND, command.wallet_id, command.transfer_id,
                           command.timestamp_ms)
    elif isinstance(command, c.ReleaseHold):
        identity.check_internal(command.command_id, identity.EXPIRE, command.wallet_id)
    else:
        raise identity.IdentityRefused(identity.INTERNAL_ID_MISMATCH,
                                       f"{type(command).__name__} is not an internal command")


def accept(codec: CommandCodec, key: bytes | None, value: bytes | None, *, public: bool) -> c.CommandBase:
    """Decode and validate one message; raises CodecError (a DLQ reason) on poison."""
    command = codec.decode(value)
    validate(command, key, public=public)
    return command
