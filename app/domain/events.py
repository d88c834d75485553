"""Events: what happened to one wallet (past-tense names, frozen values). The event log is the source of truth.

Every event carries the wallet's position after it: `version` (count of applied events, 1 for the
`WalletOpened`), `balance_after_minor`, `available_after_minor`, `held_after_minor` (minor units of the
wallet's currency) and `hash` (64 hex digits of sha256).

Applied events (`APPLIED_EVENT_TYPES`) change the wallet: each has version = previous version + 1 and
hash = sha256(previous hash || canonical bytes of the event without its hash), the first one chained to
`GENESIS_HASH`.

Outcome-only events (`OUTCOME_ONLY_EVENT_TYPES`) record a refusal so every command has exactly one outcome.
They change nothing and are not links of the chain: they repeat the wallet's current version, balances and
hash (version 0, zeros and `GENESIS_HASH` when the wallet does not exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias


@dataclass(frozen=True, kw_only=True, slots=True)
class EventBase:
    """Fields every event carries.

    wallet_id: the wallet (the Kafka key).
    command_id: the command this event is the outcome of.
    timestamp_ms: the deciding command's time, ms since the Unix epoch.
    version: wallet version after the event (applied) or current version (outcome-only; 0 if no wallet).
    balance_after_minor, available_after_minor, held_after_minor: the wallet's money after the event, minor units.
    hash: hex sha256 chain value after the event (applied) or the current chain value (outcome-only).
    """

    wallet_id: str
    command_id: str
    timestamp_ms: int
    version: int
    balance_after_minor: int
    available_after_minor: int
    held_after_minor: int
    hash: str


# --- applied events -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class WalletOpened(EventBase):
    """The wallet exists, ACTIVE, at zero balance; `overdraft_limit_minor` minor units may be spent below zero."""

    owner_id: str
    currency: str
    overdraft_limit_minor: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Deposited(EventBase):
    """`amount_minor` minor units came into the ledger, to this wallet."""

    amount_minor: int
    currency: str
    reference: str
    description: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Withdrawn(EventBase):
    """`amount_minor` minor units left the ledger, from this wallet."""

    amount_minor: int
    currency: str
    reference: str
    description: str


@dataclass(frozen=True, kw_only=True, slots=True)
class TransferDebited(EventBase):
    """Debit leg: `amount_minor` minor units left this wallet and are in transit to `destination_wallet_id`.

    The transfer relay turns it into a `TransferCredit` leg: this event is the transfer's outbox.
    """

    transfer_id: str
    destination_wallet_id: str
    amount_minor: int
    currency: str
    reference: str


@dataclass(frozen=True, kw_only=True, slots=True)
class TransferCredited(EventBase):
    """Credit leg: `amount_minor` minor units of transfer `transfer_id` arrived from `source_wallet_id`."""

    transfer_id: str
    source_wallet_id: str
    amount_minor: int
    currency: str


@dataclass(frozen=True, kw_only=True, slots=True)
class TransferRefunded(EventBase):
    """Refund leg: `amount_minor` minor units of transfer `transfer_id` came back; the destination refused them
    with `reason_code`."""

    transfer_id: str
    destination_wallet_id: str
    amount_minor: int
    currency: str
    reason_code: str


@dataclass(frozen=True, kw_only=True, slots=True)
class HoldPlaced(EventBase):
    """`amount_minor` minor units are reserved under `hold_id` until `expires_at_ms` (ms since epoch)."""

    hold_id: str
    amount_minor: int
    currency: str
    expires_at_ms: int


@dataclass(frozen=True, kw_only=True, slots=True)
class HoldCaptured(EventBase):
    """`amount_minor` minor units of hold `hold_id` left the ledger; `released_minor` (the rest) became available.

    The hold is closed.
    """

    hold_id: str
    amount_minor: int
    currency: str
    released_minor: int


@dataclass(frozen=True, kw_only=True, slots=True)
class HoldReleased(EventBase):
    """Hold `hold_id` of `amount_minor` minor units is closed and its money available again."""

    hold_id: str
    amount_minor: int
    currency: str
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class WalletFrozen(EventBase):
    """The wallet is FROZEN."""

    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class WalletUnfrozen(EventBase):
    """The wallet is ACTIVE again."""


@dataclass(frozen=True, kw_only=True, slots=True)
class WalletClosed(EventBase):
    """The wallet is CLOSED for good (it can still receive refunds of its own transfers)."""


# --- outcome-only events ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class CommandRejected(EventBase):
    """Command `command_id` of kind `command_kind` (its class name) was refused with `code` (see rejections)."""

    command_kind: str
    code: str
    detail: str


@dataclass(frozen=True, kw_only=True, slots=True)
class TransferCreditRejected(EventBase):
    """The destination (`wallet_id`) refused the credit leg of `transfer_id` with `code`.

    The transfer relay answers it with a `TransferRefund` of `amount_minor` to `source_wallet_id`.
    """

    transfer_id: str
    source_wallet_id: str
    amount_minor: int
    currency: str
    code: str
    detail: str


AppliedEvent: TypeAlias = (
    WalletOpened
    | Deposited
    | Withdrawn
    | TransferDebited
    | TransferCredited
    | TransferRefunded
    | HoldPlaced
    | HoldCaptured
    | HoldReleased
    | WalletFrozen
    | WalletUnfrozen
    | WalletClosed
)
OutcomeOnlyEvent: TypeAlias = CommandRejected | TransferCreditRejected
Event: TypeAlias = AppliedEvent | OutcomeOnlyEvent

APPLIED_EVENT_TYPES: Final[tuple[type[EventBase], ...]] = (
    WalletOpened,
    Deposited,
    Withdrawn,
    TransferDebited,
    TransferCredited,
    TransferRefunded,
    HoldPlaced,
    HoldCaptured,
    HoldReleased,
    WalletFrozen,
    WalletUnfrozen,
    WalletClosed,
)
OUTCOME_ONLY_EVENT_TYPES: Final[tuple[type[EventBase], ...]] = (CommandRejected, TransferCreditRejected)
EVENT_TYPES: Final[tuple[type[EventBase], ...]] = APPLIED_EVENT_TYPES + OUTCOME_ONLY_EVENT_TYPES

# Class name → class, for codecs: the name is the `kind` on the wire and in the hash.
EVENT_TYPE_BY_KIND: Final[dict[str, type[EventBase]]] = {t.__name__: t for t in EVENT_TYPES}


def is_applied(event: EventBase) -> bool:
    """Whether `event` changes the wallet (and is a link of its hash chain)."""
    return isinstance(event, APPLIED_EVENT_TYPES)
