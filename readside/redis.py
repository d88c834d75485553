"""The read side's Redis: the client and the key names the Redis sink writes and the API reads."""

from __future__ import annotations

from redis import asyncio as aioredis

# Every Redis call of the sink is bounded by this.
SOCKET_TIMEOUT_S = 5.0
WALLET_KEY_PREFIX = "wallet:"

def wallet_key(wallet_id: str) -> str:
    return WALLET_KEY_PREFIX + wallet_id


def make_client(url: str, connections_max: int | None = None) -> aioredis.Redis:
    """A client of `url`; with `connections_max`, callers beyond it wait for a free connection (bounded by
    SOCKET_TIMEOUT_S) instead of failing at once."""
    options = {"socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": SOCKET_TIMEOUT_S,
               "decode_responses": True}
    if connections_max is None:
        return aioredis.from_url(url, **options)
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=connections_max,
                                                    timeout=SOCKET_TIMEOUT_S, **options)
    return aioredis.Redis(connection_pool=pool)
