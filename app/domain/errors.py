"""The domain's fault hierarchy: every exception raised by `app.domain` is a `DomainError`.

Exceptions here are faults (a programmer error, corrupted data, a misconfiguration), never business
outcomes: a refused command is a `CommandRejected` event, not an exception. Boundaries map these to their own
errors (a poison message to the DLQ, a crash of the worker, an HTTP 500).

    DomainError
    ├── UnknownCurrency        a currency code the domain has no exponent for
    ├── LimitsInvalid          a `Limits` object that cannot be enforced
    ├── UnknownCommand         `decide` was given something that is not a command
    ├── WalletMismatch         the state or event belongs to another wallet than the one addressed
    ├── EventNotApplicable     `evolve` cannot apply the event to that state (gap, reorder, unknown hold)
    ├── NonCanonicalValue      a field cannot be hashed deterministically (float, bool, ...)
    ├── InvariantViolation     a wallet or a transition broke an invariant: a bug, stop processing
    └── ChainBroken            a stored event stream does not verify (tampering, loss, reordering)
"""

from __future__ import annotations

from app.errors import FoundationError


class DomainError(FoundationError):
    """Base of every fault raised by the pure domain core."""


class UnknownCurrency(DomainError):
    """The currency code is not in `CURRENCY_EXPONENTS`.

    Operator action: add the ISO 4217 code and its exponent to `app/domain/money.py`.
    """

    def __init__(self, currency: str) -> None:
        super().__init__(f"unknown currency {currency!r}")
        self.currency = currency


class LimitsInvalid(DomainError):
    """A `Limits` value is not a positive integer or exceeds what the wire format can carry.

    Operator action: fix the configured limit named in the message.
    """


class UnknownCommand(DomainError):
    """`decide` was called with an object that is not one of `COMMAND_TYPES` (a codec bug)."""


class WalletMismatch(DomainError):
    """A command or event addressed to one wallet was paired with the state of another (a routing bug)."""


class EventNotApplicable(DomainError):
    """`evolve` was given an event that does not follow from the state (version gap, unknown hold, ...).

    Replaying a log that raises this means the log or the state store is corrupt.
    """


class NonCanonicalValue(DomainError):
    """A field value has no deterministic canonical encoding (only `str`, `int` and `None` have one)."""


class InvariantViolation(DomainError):
    """A wallet state or a state transition broke a ledger invariant.

    This is always a bug in the domain core: the worker must stop rather than record the outcome.
    """


class ChainBroken(DomainError):
    """A wallet's event stream does not verify.

    `version` is the wallet version at which the chain breaks (the version the event should have had, or the
    current version for an outcome-only event); `position` is the index of the offending event in the
    sequence given to `verify_chain`.
    Operator action: the event log or a copy of it was altered, lost events or was reordered; rebuild the
    copy from `wallet.events` and investigate the source of the change.
    """

    def __init__(self, *, version: int, position: int, detail: str) -> None:
        super().__init__(f"chain broken at version {version} (event #{position}): {detail}")
        self.version = version
        self.position = position
        self.detail = detail
