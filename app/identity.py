"""Command identity: who may name a command, the ids the system derives, and how long an id is remembered.

Every command carries a `command_id`; the processor applies a command id at most once per wallet partition
while it remembers it. Three namespaces share that space, and none can reach another:

- **Public ids** are chosen by producers on `wallet.commands`: `[A-Za-z0-9_.:-]{1,128}`. They never start
  with `~`.
- **HTTP ids** are public ids the API builds from the caller's `Idempotency-Key`, scoped by its API key:
  `<key_id>.<Idempotency-Key>`. Two API clients that pick the same key name two different commands.
- **Internal ids** are derived by the processor, start with `~` (which no public id may contain) and name
  their cause, so each cause gets its own id:
  - `~credit/<source_wallet_id>/<transfer_id>:<debited_at_ms>`: the credit leg of a transfer, named by its
    debit (the processor's time of the debit is the leg's `timestamp_ms`),
  - `~refund/<source_wallet_id>/<transfer_id>:<refused_at_ms>`: the refund leg of a transfer the destination
    refused, named by the refusal (its time is the leg's `timestamp_ms`),
  - `~expire/<wallet_id>/<hold_id>:<expires_at_ms>`: the release of an expired hold, one per placement. A
    hold id is open at most once at a time and a new placement must expire after now, so later than any
    earlier placement's release: no two placements share the id, even when a producer reuses a placing
    command id the sweep forgot (the placing command's id did not name a placement: its release id outlived
    it by the time the hold was open).
  A producer may reuse a command id once the processor forgot it, while an id derived from it is still
  remembered (decided later, or on a partition swept at another moment); so a derived id names the decision
  that caused it, with its time, never the producer's id alone. A transfer id is decided once per retention,
  so the pair is never repeated.
  A public command whose id starts with `~` is refused (`RESERVED_COMMAND_ID`): over Kafka to the DLQ, over
  HTTP with a 400.

**Retention runs on the processor's clock.** A command id is remembered for `command_retention_s` from the
moment the processor first decided it, whatever `timestamp_ms` the producer wrote. The processor decides with
its own clock, so an outcome event's `timestamp_ms` is that moment, and a restore rebuilds the same index
from the events. A producer that replays an outbox with old timestamps gets duplicates, not second payments.

This module is pure: no I/O, no clock. docs/DESIGN.md ("Command identity") has the rules and their reasons.
"""

from __future__ import annotations

import re
from typing import Final

from app.errors import FoundationError

# Reason codes (DLQ `error.code` over Kafka, problem `code` over HTTP).
RESERVED_COMMAND_ID: Final = "RESERVED_COMMAND_ID"
INTERNAL_ID_MISMATCH: Final = "INTERNAL_ID_MISMATCH"

RESERVED_PREFIX: Final = "~"
PUBLIC_COMMAND_ID_LENGTH_MAX: Final = 128
PUBLIC_COMMAND_ID_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# An Idempotency-Key leaves room for `<key_id>.` in front of it within a public id.
IDEMPOTENCY_KEY_LENGTH_MAX: Final = 100
IDEMPOTENCY_KEY_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
WALLET_ID_PATTERN: Final = r"[A-Za-z0-9_-]{1,64}"
# `~<cause>/<wallet_id>/<public id>:<ms>`: at most 8 + 64 + 1 + (128 + 1 + 19) = 221 characters (MySQL columns are
# 255; 19 digits hold every non-negative Avro long).
INTERNAL_COMMAND_ID_RE: Final = re.compile(
    r"~(?P<cause>credit|refund|expire)/(?P<wallet_id>" + WALLET_ID_PATTERN + r")/(?P<cause_id>[A-Za-z0-9_.:-]{1,148})")
# The same without named groups, for JSON Schema (ECMA-262) in the OpenAPI document.
INTERNAL_COMMAND_ID_PATTERN: Final = r"~(?:credit|refund|expire)/" + WALLET_ID_PATTERN + r"/[A-Za-z0-9_.:-]{1,148}"
COMMAND_ID_LENGTH_MAX: Final = 255

CREDIT: Final = "credit"
REFUND: Final = "refund"
EXPIRE: Final = "expire"


class IdentityRefused(FoundationError, ValueError):
    """A command id breaks the identity rules; `code` is the DLQ reason or HTTP problem code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def leg_cause_id(transfer_id: str, decided_at_ms: int) -> str:
    """The cause part of a leg's id: the transfer id and the processor's time (ms) of the decision calling for
    the leg (the leg's `timestamp_ms`)."""
    return f"{transfer_id}:{decided_at_ms}"


def credit_command_id(source_wallet_id: str, transfer_id: str, debited_at_ms: int) -> str:
    """The credit leg's id: one per debit (`debited_at_ms`, the processor's clock), so a re-published leg is
    deduplicated and a transfer id reused after the retention gets a leg of its own."""
    return f"~{CREDIT}/{source_wallet_id}/{leg_cause_id(transfer_id, debited_at_ms)}"


def refund_command_id(source_wallet_id: str, transfer_id: str, refused_at_ms: int) -> str:
    """The refund leg's id: one per refused credit (`refused_at_ms`, the processor's clock), so a re-published
    refund is deduplicated and a transfer id reused after the retention gets a refund of its own."""
    return f"~{REFUND}/{source_wallet_id}/{leg_cause_id(transfer_id, refused_at_ms)}"


def expiry_command_id(wallet_id: str, hold_id: str, expires_at_ms: int) -> str:
    """The expiry release's id: one per hold placement (its hold id and expiry time, ms), not per hold id."""
    return f"~{EXPIRE}/{wallet_id}/{hold_id}:{expires_at_ms}"


def http_command_id(key_id: str, idempotency_key: str) -> str:
    """The command id of an HTTP request: the Idempotency-Key scoped by the caller's API key id."""
    return f"{key_id}.{idempotency_key}"


def is_reserved(command_id: str) -> bool:
    return command_id.startswith(RESERVED_PREFIX)


def check_public(command_id: str) -> None:
    """Raise IdentityRefused unless `command_id` is a well-formed public id (not in the internal namespace)."""
    if is_reserved(command_id):
        raise IdentityRefused(RESERVED_COMMAND_ID, f"command ids starting with {RESERVED_PREFIX!r} are reserved "
                                                   "for the ledger's own commands")
    if PUBLIC_COMMAND_ID_RE.fullmatch(command_id) is None:
        raise IdentityRefused("INVALID_FIELD", f"command_id must match {PUBLIC_COMMAND_ID_RE.pattern}")


def check_internal(command_id: str, cause: str, wallet_id: str, cause_id: str | None = None) -> None:
    """Raise IdentityRefused unless `command_id` is the internal id of `cause` for `wallet_id` (and `cause_id`).

    An internal command names its cause: a credit leg's id names the transfer's source and id, an expiry the
    wallet whose hold it releases. A leg whose id does not match its body is refused, so no id can be reused
    for another cause.
    """
    found = INTERNAL_COMMAND_ID_RE.fullmatch(command_id)
    if found is None or found["cause"] != cause or found["wallet_id"] != wallet_id or (
            cause_id is not None and found["cause_id"] != cause_id):
        expected = f"~{cause}/{wallet_id}/{cause_id if cause_id is not None else '<hold id>:<expires_at_ms>'}"
        raise IdentityRefused(INTERNAL_ID_MISMATCH, f"an internal {cause} command must have the id {expected}")


def check_leg(command_id: str, cause: str, wallet_id: str, transfer_id: str, decided_at_ms: int) -> None:
    """Raise IdentityRefused unless `command_id` is the id of the `cause` leg (credit or refund) of transfer
    `transfer_id` from `wallet_id`, called for at `decided_at_ms` (the leg's `timestamp_ms`).

    The form from before leg ids carried that time, `~<cause>/<wallet_id>/<transfer_id>`, is accepted too: such
    legs may still be on the legs topic when the processor is upgraded, and nothing publishes a leg again
    (under either form), so no leg is applied twice.
    """
    if command_id == f"~{cause}/{wallet_id}/{transfer_id}":
        return
    check_internal(command_id, cause, wallet_id, leg_cause_id(transfer_id, decided_at_ms))


def leg_decided_at_ms(command_id: str, cause: str, source_wallet_id: str, transfer_id: str) -> int | None:
    """The time (ms, the processor's clock) a leg's id names: for a credit leg the debit's, for a refund leg the
    refusal's (see credit_command_id, refund_command_id). None when `command_id` is not the `cause` leg of
    transfer `transfer_id` from `source_wallet_id` under the current form: a leg under the earlier form
    `~<cause>/<source_wallet_id>/<transfer_id>` names no time."""
    prefix = f"~{cause}/{source_wallet_id}/{transfer_id}:"
    if not command_id.startswith(prefix):
        return None
    digits = command_id[len(prefix):]
    # At most 19 digits: every non-negative Avro long (INTERNAL_COMMAND_ID_RE's bound).
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 19 else None


def retention_start_ms(now_ms: int, retention_s: int) -> int:
    """Command ids first decided before this processor time (ms) are forgotten."""
    return now_ms - retention_s * 1000
