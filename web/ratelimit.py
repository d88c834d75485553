"""Per-API-key rate limit kept in Redis: GCRA (a token bucket without a refill timer), in one round trip
together with the Redis work the request needs next.

The script moves the key's theoretical arrival time forward by one emission interval and refuses when
that would put it more than `burst` intervals ahead of now. Every web process shares the counters, so
the limit holds for the whole deployment. When the request is allowed, the same script call also
- reads a wallet's hash (balance reads: no second round trip), and/or
- claims an Idempotency-Key for a wallet (`SET NX`, see web/writes.py), returning the key's owner.
One call per request keeps a balance read at one Redis round trip. (The keys of one call must live on
one Redis node; with Redis Cluster they would need a common hash tag.)
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from prometheus_client import Counter
from redis.exceptions import NoScriptError, RedisError

RATE_KEY_PREFIX = "ratelimit:"
# Bound of the Redis call; past it the request is let through (the limit fails open, see `Gate.pass_`).
RATE_LIMIT_TIMEOUT_S = 0.5

# KEYS: rate counter, wallet hash ("" = none), claim key ("" = none).
# ARGV: now (µs), emission interval (µs), burst (requests), claim value, claim ttl (s).
# Returns {µs to wait (0 = allowed), wallet hash as a flat list, owner of the claim ("" = none)}.
_GATE = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local window = interval * tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > window then return {new_tat - now - window, {}, ''} end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
local wallet = {}
if KEYS[2] ~= '' then wallet = redis.call('HGETALL', KEYS[2]) end
local owner = ''
if KEYS[3] ~= '' then
  if redis.call('SET', KEYS[3], ARGV[4], 'NX', 'EX', ARGV[5]) then owner = ARGV[4]
  else owner = redis.call('GET', KEYS[3]) or '' end
end
return {0, wallet, owner}
"""

rate_limited_total = Counter("wallet_http_rate_limited_total", "Requests refused by the per-key rate limit.")
rate_limit_unavailable_total = Counter(
    "wallet_http_rate_limit_unavailable_total",
    "Requests let through unchecked because Redis did not answer the rate limit in time.")


@dataclass(frozen=True, slots=True)
class Passage:
    """What one gate call found. `redis_ok` False: Redis did not answer, nothing was checked or read."""

    retry_after_s: int = 0
    redis_ok: bool = True
    wallet: dict[str, str] | None = None  # the wallet hash asked for ({} when Redis has none)
    claim_owner: str | None = None  # who holds the claim asked for


class RateLimiter:
    def __init__(self, client, per_s: int, burst: int) -> None:
        self._client = client
        self._sha: str | None = None
        self._interval_us = max(1, 1_000_000 // per_s)
        self._burst = burst

    async def _call(self, keys: list[str], args: list[object]):
        if self._sha is None:
            self._sha = await self._client.script_load(_GATE)
        try:
            return await self._client.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted and lost its script cache
            self._sha = await self._client.script_load(_GATE)
            return await self._client.evalsha(self._sha, len(keys), *keys, *args)

    async def pass_(self, key_id: str, *, wallet_key: str = "", claim_key: str = "", claim_value: str = "",
                    claim_ttl_s: int = 0) -> Passage:
        """Check the key's rate (and read / claim what is asked) in one round trip.

        Fails open: when Redis is down or slow the request is allowed and counted, because refusing every
        payment while a cache is down hurts more than an unmetered minute.
        """
        keys = [RATE_KEY_PREFIX + key_id, wallet_key, claim_key]
        args = [int(time.time() * 1_000_000), self._interval_us, self._burst, claim_value, claim_ttl_s]
        try:
            async with asyncio.timeout(RATE_LIMIT_TIMEOUT_S):
                wait_us, flat, owner = await self._call(keys, args)
        except (RedisError, OSError, TimeoutError):
            rate_limit_unavailable_total.inc()
            return Passage(redis_ok=False)
        if wait_us:
            rate_limited_total.inc()
            return Passage(retry_after_s=max(1, math.ceil(int(wait_us) / 1_000_000)))
        wallet = dict(zip(flat[::2], flat[1::2])) if wallet_key else None
        return Passage(wallet=wallet, claim_owner=(owner or None) if claim_key else None)
