"""Commands: what a producer asks the ledger to do to one wallet (imperative names, frozen values).

Every command is addressed to `wallet_id` (the Kafka key), carries a producer-chosen `command_id` (the
idempotency key) and `timestamp_ms`, the command's time in milliseconds since the Unix epoch, which is the
`now` of its decision so that replay is deterministic. Amounts are `int` minor units of `currency`.

Commands are not validated on construction: a malformed amount must become a `CommandRejected` event with
a code, which only `decide` can produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias


@dataclass(frozen=True, kw_only=True, slots=True)
class CommandBase:
    """Fields every command carries.

    command_id: producer-chosen id, applied at most once.
    wallet_id: the wallet the command is addressed to (the Kafka key).
    timestamp_ms: the command's time, ms since the Unix epoch; it is `now` when deciding.
    """

    command_id: str
    wallet_id: str
    timestamp_ms: int


@dataclass(frozen=True, kw_only=True, slots=True)
class OpenWallet(CommandBase):
    """Open a wallet in `currency` for `owner_id`.

    overdraft_limit_minor: how far below zero the balance may go, minor units (>= 0).
    """

    owner_id: str
    currency: str
    overdraft_limit_minor: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class Deposit(CommandBase):
    """Put `amount_minor` (minor units of `currency`) into the wallet from outside the ledger."""

    amount_minor: int
    currency: str
    reference: str = ""
    description: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Withdraw(CommandBase):
    """Take `amount_minor` (minor units of `currency`) out of the wallet and out of the ledger."""

    amount_minor: int
    currency: str
    reference: str = ""
    description: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Transfer(CommandBase):
    """Move `amount_minor` (minor units) from this wallet to `destination_wallet_id`: the debit leg.

    The transfer's id is this command's `command_id`; the relay derives the legs' ids from it.
    """

    destination_wallet_id: str
    amount_minor: int
    currency: str
    reference: str = ""

    @property
    def transfer_id(self) -> str:
        """The transfer's id: the debit command's id."""
        return self.command_id


@dataclass(frozen=True, kw_only=True, slots=True)
class TransferCredit(CommandBase):
    """Internal: the credit leg of transfer `transfer_id`, addressed to the destination (`wallet_id`).

    Published by the transfer relay under the id `app.identity.credit_command_id` gives.
    """

    transfer_id: str
    source_wallet_id: str
    amount_minor: int
    currency: str


@dataclass(frozen=True, kw_only=True, slots=True)
class TransferRefund(CommandBase):
    """Internal: gives `amount_minor` back to the source (`wallet_id`) after the destination refused the credit.

    Published by the transfer relay under the id `app.identity.refund_command_id` gives; `reason_code` is the
    rejection code of the refused credit leg.
    """

    transfer_id: str
    destination_wallet_id: str
    amount_minor: int
    currency: str
    reason_code: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PlaceHold(CommandBase):
    """Reserve `amount_minor` (minor units) of the available balance until `expires_at_ms` (ms since epoch)."""

    hold_id: str
    amount_minor: int
    currency: str
    expires_at_ms: int


@dataclass(frozen=True, kw_only=True, slots=True)
class CaptureHold(CommandBase):
    """Take `amount_minor` (minor units; None = all) of hold `hold_id` out of the ledger and close the hold.

    A partial capture releases the remainder of the hold.
    """

    hold_id: str
    amount_minor: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ReleaseHold(CommandBase):
    """Close hold `hold_id` without taking money; the expiry timer sends `reason="EXPIRED"`."""

    hold_id: str
    reason: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Freeze(CommandBase):
    """Stop money moving into or out of the wallet (refunds and hold releases still apply)."""

    reason: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Unfreeze(CommandBase):
    """Let a frozen wallet move money again."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Close(CommandBase):
    """Close the wallet for good; only at zero balance and with no open holds."""


Command: TypeAlias = (
    OpenWallet
    | Deposit
    | Withdraw
    | Transfer
    | TransferCredit
    | TransferRefund
    | PlaceHold
    | CaptureHold
    | ReleaseHold
    | Freeze
    | Unfreeze
    | Close
)

COMMAND_TYPES: Final[tuple[type[CommandBase], ...]] = (
    OpenWallet,
    Deposit,
    Withdraw,
    Transfer,
    TransferCredit,
    TransferRefund,
    PlaceHold,
    CaptureHold,
    ReleaseHold,
    Freeze,
    Unfreeze,
    Close,
)

# Published only by the transfer relay on `wallet.transfer-legs`; refused on the public `wallet.commands`.
INTERNAL_COMMAND_TYPES: Final[tuple[type[CommandBase], ...]] = (TransferCredit, TransferRefund)

# Class name → class, for codecs: the name is the `kind` on the wire.
COMMAND_TYPE_BY_KIND: Final[dict[str, type[CommandBase]]] = {t.__name__: t for t in COMMAND_TYPES}

# Reason the hold-expiry timer gives to the ReleaseHold it sends.
EXPIRED_REASON: Final = "EXPIRED"
