"""Rejection codes: why a command was refused, as carried by `CommandRejected.code`.

They are part of the wire contract (Avro events, HTTP problem `code`): add codes, never rename them.
"""

from __future__ import annotations

from typing import Final

# The command addresses a wallet that was never opened.
WALLET_NOT_FOUND: Final = "WALLET_NOT_FOUND"
# OpenWallet for a wallet id that is already taken (whatever its status, closed included).
WALLET_EXISTS: Final = "WALLET_EXISTS"
# The wallet is frozen: money cannot move out of it or into it (refunds excepted), nor can it be frozen again.
WALLET_FROZEN: Final = "WALLET_FROZEN"
# The wallet is closed: it accepts nothing but refunds of its own transfers.
WALLET_CLOSED: Final = "WALLET_CLOSED"
# The amount is above the wallet's available balance (balance - held + overdraft limit).
INSUFFICIENT_FUNDS: Final = "INSUFFICIENT_FUNDS"
# The command's currency is not the wallet's, or (OpenWallet) not a known ISO 4217 code.
CURRENCY_MISMATCH: Final = "CURRENCY_MISMATCH"
# A number of the command is malformed: an amount that is not a positive integer fitting an Avro long, a
# negative overdraft limit, or a hold expiry that is not an integer time fitting an Avro long.
INVALID_AMOUNT: Final = "INVALID_AMOUNT"
# A transfer whose destination is its source.
SELF_TRANSFER: Final = "SELF_TRANSFER"
# No open hold with that id on the wallet (never placed, already captured, released or expired-and-released).
HOLD_NOT_FOUND: Final = "HOLD_NOT_FOUND"
# The hold's expiry is not in the future (PlaceHold) or has passed (CaptureHold).
HOLD_EXPIRED: Final = "HOLD_EXPIRED"
# A release for expiry (reason EXPIRED) of a hold whose expiry is still ahead: the expiry was meant for an
# earlier placement of the same hold id.
HOLD_NOT_EXPIRED: Final = "HOLD_NOT_EXPIRED"
# A capture of more than the hold's amount.
HOLD_EXCEEDED: Final = "HOLD_EXCEEDED"
# The wallet already has `Limits.holds_open_max` open holds.
TOO_MANY_HOLDS: Final = "TOO_MANY_HOLDS"
# Close of a wallet whose balance is not zero or which has open holds.
BALANCE_NOT_ZERO: Final = "BALANCE_NOT_ZERO"
# The amount is above the per-command maximum, or the resulting balance above the balance maximum.
LIMIT_EXCEEDED: Final = "LIMIT_EXCEEDED"
# The command repeats something already in effect: a hold id that is already open, or Unfreeze of a wallet
# that is not frozen. (Repeated command ids are deduplicated before `decide`, by the processor.)
DUPLICATE_COMMAND: Final = "DUPLICATE_COMMAND"

REJECTION_CODES: Final[frozenset[str]] = frozenset(
    {
        WALLET_NOT_FOUND,
        WALLET_EXISTS,
        WALLET_FROZEN,
        WALLET_CLOSED,
        INSUFFICIENT_FUNDS,
        CURRENCY_MISMATCH,
        INVALID_AMOUNT,
        SELF_TRANSFER,
        HOLD_NOT_FOUND,
        HOLD_EXPIRED,
        HOLD_NOT_EXPIRED,
        HOLD_EXCEEDED,
        TOO_MANY_HOLDS,
        BALANCE_NOT_ZERO,
        LIMIT_EXCEEDED,
        DUPLICATE_COMMAND,
    }
)
