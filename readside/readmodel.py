"""The MySQL read model: table definitions (SQLAlchemy Core) and how events become rows.

The schema is created and changed only by Alembic migrations (`migrations/`); these definitions are
what the sink writes and the API reads, and a test checks they match the migrated database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, Text

from app import identity
from app.domain import events as e
from app.domain.effects import money_effect

metadata = MetaData()

wallets = Table(
    "wallets", metadata,
    Column("wallet_id", String(64), primary_key=True),
    Column("owner_id", String(1024), nullable=False, server_default=""),
    Column("currency", String(3), nullable=False, server_default=""),
    Column("status", String(16), nullable=False, server_default="ACTIVE"),
    Column("balance_minor", BigInteger, nullable=False),
    Column("available_minor", BigInteger, nullable=False),
    Column("held_minor", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
)

ledger_entries = Table(
    "ledger_entries", metadata,
    Column("wallet_id", String(64), primary_key=True),
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("command_id", String(255), nullable=False),
    Column("kind", String(32), nullable=False),
    # Signed change of the balance in minor units (0 for holds, freezes).
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False, server_default=""),
    Column("balance_after_minor", BigInteger, nullable=False),
    Column("available_after_minor", BigInteger, nullable=False),
    Column("held_after_minor", BigInteger, nullable=False),
    Column("counterparty_wallet_id", String(64), nullable=True),
    Column("transfer_id", String(255), nullable=True),
    Column("hold_id", String(64), nullable=True),
    Column("reference", String(1024), nullable=False, server_default=""),
    Column("hash", String(64), nullable=False),
    Column("event_time_ms", BigInteger, nullable=False),
    Index("ix_ledger_entries_wallet_time", "wallet_id", "event_time_ms", "version"),
)

# One row per transfer: a transfer id is unique per source wallet's partition while the processor remembers it
# (command_retention_s), so (transfer id, source, debit time) names one debit; the key's order serves both
# `GET /v1/transfers/{id}` (the rows of one id) and the sink's lookup of a leg's debit (id and source).
transfers = Table(
    "transfers", metadata,
    Column("transfer_id", String(255), primary_key=True),
    Column("source_wallet_id", String(64), primary_key=True),
    # The debit's time, ms (the processor's clock; DEBITED_AT_UNKNOWN_MS when no debit was found for a leg).
    Column("debited_at_ms", BigInteger, primary_key=True, autoincrement=False),
    Column("destination_wallet_id", String(64), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),  # pending | completed | refunded
    Column("reason_code", String(32), nullable=True),
    Column("created_at_ms", BigInteger, nullable=True),
    Column("completed_at_ms", BigInteger, nullable=True),
    Column("refunded_at_ms", BigInteger, nullable=True),
)

command_outcomes = Table(
    "command_outcomes", metadata,
    Column("command_id", String(255), primary_key=True),
    Column("wallet_id", String(64), nullable=False),
    Column("event_kind", String(32), nullable=False),
    Column("outcome", String(16), nullable=False),  # applied | rejected
    Column("code", String(32), nullable=True),
    Column("detail", Text, nullable=True),
    Column("version", BigInteger, nullable=False),
    Column("fingerprint", String(32), nullable=False, server_default=""),
    Column("event_time_ms", BigInteger, nullable=False),
    Index("ix_command_outcomes_wallet", "wallet_id"),
)

_REJECTIONS = (e.CommandRejected, e.TransferCreditRejected)


def ledger_row(event: e.EventBase) -> dict[str, Any]:
    """The `ledger_entries` row of an applied event."""
    counterparty = getattr(event, "destination_wallet_id", None) or getattr(event, "source_wallet_id", None)
    return {
        "wallet_id": event.wallet_id, "version": event.version, "command_id": event.command_id,
        "kind": type(event).__name__, "amount_minor": money_effect(event).balance_minor,
        "currency": getattr(event, "currency", ""), "balance_after_minor": event.balance_after_minor,
        "available_after_minor": event.available_after_minor, "held_after_minor": event.held_after_minor,
        "counterparty_wallet_id": counterparty, "transfer_id": getattr(event, "transfer_id", None),
        "hold_id": getattr(event, "hold_id", None), "reference": getattr(event, "reference", ""),
        "hash": event.hash, "event_time_ms": event.timestamp_ms,
    }


def outcome_row(event: e.EventBase, fingerprint: str) -> dict[str, Any]:
    rejected = isinstance(event, _REJECTIONS)
    return {
        "command_id": event.command_id, "wallet_id": event.wallet_id, "event_kind": type(event).__name__,
        "outcome": "rejected" if rejected else "applied", "code": getattr(event, "code", None),
        "detail": getattr(event, "detail", None), "version": event.version, "fingerprint": fingerprint,
        "event_time_ms": event.timestamp_ms,
    }


# The debit time of a row a leg landed on when no debit of its source and transfer id was there (see
# transfer_row), and of rows migrated without a debit time (migrations/versions/0004).
DEBITED_AT_UNKNOWN_MS = 0


def transfer_row(event: e.EventBase) -> dict[str, Any] | None:
    """The `transfers` row an event creates or moves forward (None for other events).

    Its key is the transfer id, the source wallet and the debit's time (`debited_at_ms`, ms). A debit has that
    time (its own); a credit leg's id names it (app/identity.py). A refund's id names the refusal, not the
    debit, and a leg under the earlier id form names no time: for those `debited_at_ms` is None, and the sink
    puts the leg on the latest debit of its source and transfer id (see `agents/mysql_sink.py`)."""
    if isinstance(event, e.TransferDebited):
        source, destination, status = event.wallet_id, event.destination_wallet_id, "pending"
        debited_at_ms: int | None = event.timestamp_ms
    elif isinstance(event, e.TransferCredited):
        source, destination, status = event.source_wallet_id, event.wallet_id, "completed"
        debited_at_ms = identity.leg_decided_at_ms(event.command_id, identity.CREDIT, source, event.transfer_id)
    elif isinstance(event, e.TransferRefunded):
        source, destination, status = event.wallet_id, event.destination_wallet_id, "refunded"
        debited_at_ms = None
    else:
        return None
    return {
        "transfer_id": event.transfer_id, "source_wallet_id": source, "debited_at_ms": debited_at_ms,
        "destination_wallet_id": destination, "amount_minor": event.amount_minor, "currency": event.currency,
        "status": status,
        "reason_code": getattr(event, "reason_code", None),
        "created_at_ms": event.timestamp_ms if status == "pending" else None,
        "completed_at_ms": event.timestamp_ms if status == "completed" else None,
        "refunded_at_ms": event.timestamp_ms if status == "refunded" else None,
    }


_STATUS_BY_EVENT = {e.WalletOpened: "ACTIVE", e.WalletFrozen: "FROZEN", e.WalletUnfrozen: "ACTIVE",
                    e.WalletClosed: "CLOSED"}


@dataclass
class WalletView:
    """A wallet's latest projected position, folded over the events of one batch."""

    wallet_id: str
    version: int = 0
    balance_minor: int = 0
    available_minor: int = 0
    held_minor: int = 0
    last_hash: str = ""
    updated_at_ms: int = 0
    # Empty means "not changed in this batch": the store keeps its value.
    owner_id: str = ""
    currency: str = ""
    status: str = ""

    def fold(self, event: e.EventBase) -> None:
        if event.version <= self.version or isinstance(event, _REJECTIONS):
            return
        self.version = event.version
        self.balance_minor = event.balance_after_minor
        self.available_minor = event.available_after_minor
        self.held_minor = event.held_after_minor
        self.last_hash = event.hash
        self.updated_at_ms = event.timestamp_ms
        if isinstance(event, e.WalletOpened):
            self.owner_id = event.owner_id
        currency = getattr(event, "currency", "")
        if currency:
            self.currency = currency
        status = _STATUS_BY_EVENT.get(type(event))
        if status:
            self.status = status


def fold_wallets(events: list[e.EventBase]) -> dict[str, WalletView]:
    """One view per wallet touched by `events` (one store write per wallet per batch)."""
    views: dict[str, WalletView] = {}
    for event in events:
        if isinstance(event, _REJECTIONS):
            continue
        view = views.get(event.wallet_id)
        if view is None:
            view = views[event.wallet_id] = WalletView(event.wallet_id)
        view.fold(event)
    return views


# ---------------------------------------------------------------- read side (history, balance at a time, replica)


def read_dsn(settings) -> str:
    """Where history and balance-at-a-time reads go: the replica when configured, else the primary."""
    return settings.mysql_replica_dsn or settings.mysql_dsn


def balance_at_query(wallet_id: str, at_ms: int):
    """The last ledger entry (highest version) of `wallet_id` with event_time_ms <= at_ms.

    "Last" is by version, not by time: a transfer credit carries the time of its debit's command, so a
    wallet's event times are not monotonic in its versions (a credit applied after the wallet's own later
    command has an earlier time). By version, the answer is a position the wallet really was in. The
    primary key (wallet_id, version) serves it, scanning back from the newest entry."""
    from sqlalchemy import select

    return (select(ledger_entries.c.balance_after_minor, ledger_entries.c.available_after_minor,
                   ledger_entries.c.held_after_minor, ledger_entries.c.currency, ledger_entries.c.version,
                   ledger_entries.c.event_time_ms)
            .where(ledger_entries.c.wallet_id == wallet_id, ledger_entries.c.event_time_ms <= at_ms)
            .order_by(ledger_entries.c.version.desc())
            .limit(1))


async def balance_at(conn, wallet_id: str, at_ms: int) -> dict[str, Any] | None:
    """The wallet's position at time `at_ms` (epoch milliseconds): balance, available and held after its
    last ledger entry at or before then, in minor units, with that entry's version. None before it opened."""
    row = (await conn.execute(balance_at_query(wallet_id, at_ms))).mappings().first()
    return None if row is None else dict(row)


async def replica_lag_seconds(conn) -> float | None:
    """The replica's Seconds_Behind_Master, or None when replication is stopped or this is no replica
    (a replica whose SQL thread is stopped has no lag figure: report it as not ready)."""
    from sqlalchemy import text

    row = (await conn.execute(text("SHOW SLAVE STATUS"))).mappings().first()
    if row is None:
        return None
    lag = row.get("Seconds_Behind_Master")
    if lag is None or row.get("Slave_SQL_Running") != "Yes" or row.get("Slave_IO_Running") != "Yes":
        return None
    return float(lag)
