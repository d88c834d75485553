"""A wallet's state: the fold of its applied events (see `ledger.evolve`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from app.domain.frozen import builder
from app.domain.hashing import GENESIS_HASH

WalletStatus: TypeAlias = Literal["ACTIVE", "FROZEN", "CLOSED"]
STATUS_ACTIVE: Final = "ACTIVE"
STATUS_FROZEN: Final = "FROZEN"
STATUS_CLOSED: Final = "CLOSED"
WALLET_STATUSES: Final[frozenset[str]] = frozenset({STATUS_ACTIVE, STATUS_FROZEN, STATUS_CLOSED})

__all__ = [
    "GENESIS_HASH",
    "Hold",
    "STATUS_ACTIVE",
    "STATUS_CLOSED",
    "STATUS_FROZEN",
    "WALLET_STATUSES",
    "WalletState",
    "WalletStatus",
    "build_hold",
    "build_state",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class Hold:
    """An open hold: `amount_minor` minor units reserved until `expires_at_ms` (ms since epoch)."""

    hold_id: str
    amount_minor: int
    expires_at_ms: int


@dataclass(frozen=True, kw_only=True, slots=True)
class WalletState:
    """One wallet after its last applied event.

    balance_minor: money in the wallet, minor units of `currency` (negative down to -overdraft_limit_minor).
    held_minor: sum of the open holds, minor units.
    overdraft_limit_minor: how far below zero the balance may go, minor units (>= 0).
    version: number of applied events (1 after `WalletOpened`).
    last_hash: hex sha256 chain value of the last applied event.
    holds: the open holds, sorted by `hold_id` so that equal histories give equal (and equally encoded)
        states whatever the order of their placements.
    """

    wallet_id: str
    owner_id: str
    status: WalletStatus
    currency: str
    balance_minor: int
    held_minor: int
    overdraft_limit_minor: int
    version: int
    last_hash: str
    holds: tuple[Hold, ...] = ()

    @property
    def available_minor(self) -> int:
        """What can be spent now, minor units: balance - held + overdraft limit."""
        return self.balance_minor - self.held_minor + self.overdraft_limit_minor

    def find_hold(self, hold_id: str) -> Hold | None:
        """The open hold `hold_id`, or None. Linear: a wallet has at most `Limits.holds_open_max` holds."""
        for hold in self.holds:
            if hold.hold_id == hold_id:
                return hold
        return None


# `WalletState(...)` and `Hold(...)` without the frozen dataclass __init__ (app/domain/frozen.py): `evolve` builds a
# state per event and the store one per state it reads.
build_state = builder(WalletState)
build_hold = builder(Hold)
