"""The MySQL sink: projects `wallet.events` into the read model, one DB transaction per batch.

Idempotent by key: ledger entries by `(wallet_id, version)` and outcomes by `command_id` are
`INSERT IGNORE`d; a wallet row only moves to a newer version; a transfer's status only moves forward.
"""

from __future__ import annotations

from sqlalchemy import func
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agents.projection import ProjectedEvent, StoreUnavailable
from app.domain.events import is_applied
from app.readmodel import (command_outcomes, fold_wallets, ledger_entries, ledger_row, outcome_row,
                           transfer_row, transfers, wallets)
from app.settings import Settings

# Pool sized for the sink's one writer plus the API's readers in the same process.
POOL_SIZE = 10
CONNECT_TIMEOUT_S = 5


def make_engine(dsn: str) -> AsyncEngine:
    return create_async_engine(dsn, pool_size=POOL_SIZE, pool_pre_ping=True, pool_recycle=3600,
                               connect_args={"connect_timeout": CONNECT_TIMEOUT_S})


def _wallet_upsert():
    stmt = insert(wallets)
    new, old = stmt.inserted, wallets.c
    newer = new.version > old.version

    def keep_unless(column: str, blank_keeps: bool = False):
        value = getattr(new, column)
        condition = newer & (value != "") if blank_keeps else newer
        return func.if_(condition, value, getattr(old, column))

    # MySQL applies these left to right: `version` must come last so the others compare the old one.
    return stmt.on_duplicate_key_update([
        ("owner_id", keep_unless("owner_id", True)),
        ("currency", keep_unless("currency", True)),
        ("status", keep_unless("status", True)),
        ("balance_minor", keep_unless("balance_minor")),
        ("available_minor", keep_unless("available_minor")),
        ("held_minor", keep_unless("held_minor")),
        ("last_hash", keep_unless("last_hash")),
        ("updated_at_ms", keep_unless("updated_at_ms")),
        ("version", func.greatest(new.version, old.version)),
    ])


def _transfer_upsert():
    stmt = insert(transfers)
    new, old = stmt.inserted, transfers.c
    return stmt.on_duplicate_key_update([
        ("status", func.if_(new.status != "pending", new.status, old.status)),
        ("reason_code", func.coalesce(new.reason_code, old.reason_code)),
        ("created_at_ms", func.coalesce(old.created_at_ms, new.created_at_ms)),
        ("completed_at_ms", func.coalesce(old.completed_at_ms, new.completed_at_ms)),
        ("refunded_at_ms", func.coalesce(old.refunded_at_ms, new.refunded_at_ms)),
    ])


class MySqlWriter:
    """Writes one batch of events in one transaction (see the module docstring)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._wallet_upsert = _wallet_upsert()
        self._transfer_upsert = _transfer_upsert()
        self._ledger_insert = insert(ledger_entries).prefix_with("IGNORE")
        self._outcome_insert = insert(command_outcomes).prefix_with("IGNORE")

    async def __call__(self, items: list[ProjectedEvent]) -> None:
        events = [item.event for item in items]
        ledger = [ledger_row(event) for event in events if is_applied(event)]
        outcomes = [outcome_row(item.event, item.fingerprint) for item in items]
        transfer_rows = [row for row in map(transfer_row, events) if row is not None]
        wallet_rows = [
            {"wallet_id": v.wallet_id, "owner_id": v.owner_id, "currency": v.currency,
             "status": v.status, "balance_minor": v.balance_minor, "available_minor": v.available_minor,
             "held_minor": v.held_minor, "version": v.version, "last_hash": v.last_hash,
             "updated_at_ms": v.updated_at_ms}
            for v in fold_wallets(events).values()
        ]
        try:
            async with self.engine.begin() as conn:
                if ledger:
                    await conn.execute(self._ledger_insert, ledger)
                if outcomes:
                    await conn.execute(self._outcome_insert, outcomes)
                if transfer_rows:
                    await conn.execute(self._transfer_upsert, transfer_rows)
                if wallet_rows:
                    await conn.execute(self._wallet_upsert, wallet_rows)
        except (OperationalError, DBAPIError, OSError, ConnectionError) as exc:
            raise StoreUnavailable(f"MySQL: {type(exc).__name__}: {str(exc)[:200]}") from exc


async def create_writer(settings: Settings) -> MySqlWriter:
    return MySqlWriter(make_engine(settings.mysql_dsn))
