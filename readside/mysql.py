"""The read side's MySQL: engines for the primary and the replica, and the replica's lag.

Used by the MySQL sink (writes), the API (reads), reconcile and rebuild.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app import metrics
from app.settings import Settings
from readside.readmodel import replica_lag_seconds

# Pool sized for the sink's one writer plus the API's readers in the same process.
POOL_SIZE = 10
CONNECT_TIMEOUT_S = 5


def make_engine(dsn: str) -> AsyncEngine:
    # utf8mb4 on the connection too, whatever the server's default: texts are any Unicode.
    return create_async_engine(dsn, pool_size=POOL_SIZE, pool_pre_ping=True, pool_recycle=3600,
                               connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "charset": "utf8mb4"})


# Each poll of the replica's status is bounded by this (the poll must not hang the sinks role).
REPLICA_POLL_TIMEOUT_S = 5.0


async def poll_replica_lag(engine: AsyncEngine) -> float | None:
    """The replica's lag in seconds, or None when it is stopped, unreachable or not a replica.

    The web's `/readyz` can call this with its own engine on `settings.mysql_replica_dsn`."""
    try:
        async with engine.connect() as conn:
            return await asyncio.wait_for(replica_lag_seconds(conn), REPLICA_POLL_TIMEOUT_S)
    except (OperationalError, DBAPIError, OSError, ConnectionError, asyncio.TimeoutError):
        return None


async def monitor_replica_lag(settings: Settings) -> None:
    """Publish `wallet_mysql_replica_lag_seconds` every `replica_lag_poll_interval_s` until cancelled
    (-1 while replication is stopped or the replica unreachable). Does nothing without a replica DSN."""
    if not settings.mysql_replica_dsn:
        return
    engine = create_async_engine(settings.mysql_replica_dsn, pool_size=1, pool_pre_ping=True,
                                 connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        while True:
            lag = await poll_replica_lag(engine)
            metrics.mysql_replica_lag_seconds.set(-1 if lag is None else lag)
            await asyncio.sleep(settings.replica_lag_poll_interval_s)
    finally:
        await engine.dispose()
