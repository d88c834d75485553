"""Money in transit, watched live: the sinks role reads the oldest transfer still `pending` in the MySQL read
model and exports its age, `wallet_transfer_in_transit_oldest_seconds` (0 when none).

A transfer is in transit from its debit at the source until its credit at the destination (or its refund);
normally well under a second. Older than `transfer_in_transit_max_s`, its credit leg is not arriving: the
alert WalletTransferStuckInTransit fires (docs/OPERATIONS.md has the runbook). `wallet reconcile`
(wallet/reconcile.py) finds the same transfers in the event log, the truth, but it runs once a day; this gauge
sees them within minutes.

It reads the projection, on the replica when there is one. So a transfer whose credit the MySQL sink or the
replica has not caught up with yet still counts: when the sink or the replica lags, their own alerts fire
too, and reconcile is the judge. `transfers` has no index on `status`: each poll is a scan of the table,
bounded by QUERY_TIMEOUT_S, which is why it runs on the replica and every
`transfer_in_transit_poll_interval_s` (30 s), not per scrape. An index on (status, created_at_ms) would make
it a lookup, at a cost on every transfer row the MySQL sink writes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app import metrics
from readside.readmodel import transfers
from app.settings import Settings

log = logging.getLogger("wallet.in_transit")

# Bound of one read of the oldest in-transit transfer (a scan of `transfers`).
QUERY_TIMEOUT_S = 10.0
# Bound of opening a connection to MySQL.
CONNECT_TIMEOUT_S = 5


async def oldest_debit_ms(engine: AsyncEngine) -> int | None:
    """When the oldest transfer still pending in `transfers` was debited (ms since the epoch), or None."""
    query = select(func.min(transfers.c.created_at_ms)).where(transfers.c.status == "pending")
    async with engine.connect() as conn:
        return (await asyncio.wait_for(conn.execute(query), QUERY_TIMEOUT_S)).scalar()


async def monitor_in_transit(settings: Settings) -> None:
    """Keep `wallet_transfer_in_transit_oldest_seconds` current until cancelled: the oldest pending debit is
    read every `transfer_in_transit_poll_interval_s`, its age computed at each scrape. A failed read keeps
    the last known debit (still in transit as far as anyone can tell) and is logged."""
    engine = create_async_engine(settings.mysql_replica_dsn or settings.mysql_dsn, pool_size=1,
                                 pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    debited_at_ms: int | None = None

    def age_s() -> float:
        return 0.0 if debited_at_ms is None else max(0.0, time.time() - debited_at_ms / 1000)

    metrics.transfer_in_transit_oldest_seconds.set_function(age_s)
    try:
        while True:
            try:
                debited_at_ms = await oldest_debit_ms(engine)
            except (SQLAlchemyError, OSError, asyncio.TimeoutError) as exc:
                log.warning("oldest in-transit transfer not read; the gauge keeps its last value",
                            extra={"error": f"{type(exc).__name__}: {exc}"})
            await asyncio.sleep(settings.transfer_in_transit_poll_interval_s)
    finally:
        await engine.dispose()
