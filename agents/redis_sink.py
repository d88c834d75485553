"""The Redis sink: per-wallet hashes of the hot balance, written only forward in version.

Key `wallet:<wallet_id>`, fields `balance available held` (minor units), `version`, `currency`,
`status`, `owner_id`. One Lua call per touched wallet per batch, all pipelined in one round trip; the
script ignores a version that is not newer, so a replayed or late batch can never overwrite a newer
balance (no invalidate-then-race).
"""

from __future__ import annotations

from redis import asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from agents.projection import ProjectedEvent, StoreRefused
from app.settings import Settings
from readside.errors import StoreUnavailable
from readside.readmodel import fold_wallets
from readside.redis import make_client, wallet_key

# ARGV: version, balance, available, held, currency, status, owner_id ("" = keep).
UPSERT_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'version')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'balance', ARGV[2], 'available', ARGV[3], 'held', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'currency', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'status', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'owner_id', ARGV[7]) end
return 1
"""


# Replies that are about one wallet's key, not the server: the key holds another type, or the script failed
# on what the key holds (a `version` that is not a number). Writing the same wallet again fails the same way.
# Every other error (connection, timeout, OOM, READONLY, NOPERM, BUSY, LOADING) is the server's state, retried.
REFUSED_REPLY_PREFIXES = ("WRONGTYPE", "ERR user_script", "ERR Error running script", "user_script")


def store_error(exc: RedisError | OSError) -> StoreUnavailable | StoreRefused:
    message = f"{type(exc).__name__}: {str(exc)[:StoreRefused.DETAIL_CHARS_MAX]}"
    if type(exc) is ResponseError and str(exc).startswith(REFUSED_REPLY_PREFIXES):
        return StoreRefused(type(exc).__name__, message)
    return StoreUnavailable(f"Redis: {message}")


class RedisWriter:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.script = client.register_script(UPSERT_IF_NEWER)

    async def __call__(self, items: list[ProjectedEvent]) -> None:
        views = fold_wallets([item.event for item in items])
        if not views:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for v in views.values():
                    await self.script(keys=[wallet_key(v.wallet_id)], client=pipe, args=[
                        v.version, v.balance_minor, v.available_minor, v.held_minor, v.currency, v.status,
                        v.owner_id])
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise store_error(exc) from exc


async def create_writer(settings: Settings) -> RedisWriter:
    return RedisWriter(make_client(settings.redis_url))
