"""Money in transit, watched live: the sinks role reads the transfers still `pending` in the MySQL read model
and exports how many there are, `wallet_transfers_in_transit`, and the oldest one's age,
`wallet_transfer_in_transit_oldest_seconds` (0 when none). Each transfer is a row of its own (transfer id,
source wallet, debit time; readside/readmodel.py), so two transfers under one id count as two.

A transfer is in transit from its debit at the source until its credit at the destination (or its refund);
normally well under a second. Older than `transfer_in_transit_max_s`, its credit leg is not arriving: the
alert WalletTransferStuckInTransit fires (docs/OPERATIONS.md has the runbook). `wallet reconcile`
(wallet/reconcile.py) finds the same transfers in the event log, the truth, but it runs once a day; this gauge
sees them within minutes.

It reads the projection, on the replica when there is one. So a transfer whose credit the MySQL sink or the
replica has not caught up with yet still counts: when the sink or the replica lags, their own alerts fire
too, and reconcile is the judge. `transfers` has no index on `status`: each poll is a scan of the table,
bounded by QUERY_TIMEOUT_S, which is why it runs on the replica and every
`transfer_in_transit_poll_interval_s` (30 s), not per scrape. An index on (status, debited_at_ms) would make
it a lookup, at a cost on every transfer row the MySQL sink writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app import metrics
from readside.readmodel import transfers
from app.settings import Settings

log = logging.getLogger("wallet.in_transit")

# Bound of one read of the transfers in transit (a scan of `transfers`).
QUERY_TIMEOUT_S = 10.0
# Bound of opening a connection to MySQL.
CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class InTransit:
    """The transfers still pending in `transfers`: how many, and when the oldest was debited (ms since the
    epoch; None when there is none)."""

    count: int
    oldest_debit_ms: int | None


async def read_in_transit(engine: AsyncEngine) -> InTransit:
    """The transfers still pending in `transfers`, one row each (one scan)."""
    pending = transfers.c.status == "pending"
    query = select(func.count(), func.min(transfers.c.debited_at_ms)).where(pending)
    async with engine.connect() as conn:
        count, oldest_debit_ms = (await asyncio.wait_for(conn.execute(query), QUERY_TIMEOUT_S)).one()
    return InTransit(count, oldest_debit_ms)


async def monitor_in_transit(settings: Settings) -> None:
    """Keep `wallet_transfers_in_transit` and `wallet_transfer_in_transit_oldest_seconds` current until
    cancelled: the pending transfers are read every `transfer_in_transit_poll_interval_s`, the oldest one's
    age computed at each scrape. A failed read keeps the last known figures (still in transit as far as anyone
    can tell) and is logged."""
    engine = create_async_engine(settings.mysql_replica_dsn or settings.mysql_dsn, pool_size=1,
                                 pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    debited_at_ms: int | None = None

    def age_s() -> float:
        return 0.0 if debited_at_ms is None else max(0.0, time.time() - debited_at_ms / 1000)

    metrics.transfer_in_transit_oldest_seconds.set_function(age_s)
    try:
        while True:
            try:
                found = await read_in_transit(engine)
                debited_at_ms = found.oldest_debit_ms
                metrics.transfers_in_transit.set(found.count)
            except (SQLAlchemyError, OSError, asyncio.TimeoutError) as exc:
                log.warning("transfers in transit not read; the gauges keep their last values",
                            extra={"error": f"{type(exc).__name__}: {exc}"})
            await asyncio.sleep(settings.transfer_in_transit_poll_interval_s)
    finally:
        await engine.dispose()
