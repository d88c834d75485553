"""Per-API-key rate limit kept in Redis: GCRA (a token bucket without a refill timer), in one round trip
together with the Redis work the request needs next.

The script moves the key's theoretical arrival time forward by one emission interval and refuses when
that would put it more than `burst` intervals ahead of now. Every web process shares the counters, so
the limit holds for the whole deployment. A request is charged once (web/access.py decides when); a call
that does not charge only does the Redis work asked. When the request is allowed, the same script call also
- reads a wallet's hash (balance reads: no second round trip), and/or
- claims an Idempotency-Key for a wallet (`SET NX`, see web/writes.py), returning the key's owner.
One call per request keeps a balance read at one Redis round trip. (The keys of one call must live on
one Redis node; with Redis Cluster they would need a common hash tag.)

Calls are auto-pipelined: the calls made in one turn of the event loop go to Redis as one pipeline, so
a busy web process pays the client's per-call cost (connection checkout, retries, framing) once per
batch instead of once per request.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from prometheus_client import Counter
from redis.exceptions import NoScriptError, RedisError

RATE_KEY_PREFIX = "ratelimit:"
# Bound of the Redis call; past it the request is let through (the limit fails open, see `RateLimiter.pass_`).
RATE_LIMIT_TIMEOUT_S = 0.5
# Most gate calls sent to Redis in one pipeline.
GATE_PIPELINE_SIZE_MAX = 256

# KEYS: rate counter, wallet hash ("" = none), claim key ("" = none).
# ARGV: now (µs), emission interval (µs), burst (requests), claim value, claim ttl (s), charge ("1" or "0").
# Returns {µs to wait (0 = allowed), wallet hash as a flat list, owner of the claim ("" = none)}.
_GATE = """
if ARGV[6] == '1' then
  local now = tonumber(ARGV[1])
  local interval = tonumber(ARGV[2])
  local window = interval * tonumber(ARGV[3])
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval
  if new_tat - now > window then return {new_tat - now - window, {}, ''} end
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
end
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
        self._queued: list[tuple[list[str], list[object], asyncio.Future]] = []
        self._flushes: set[asyncio.Task] = set()

    async def _call(self, keys: list[str], args: list[object]):
        future = asyncio.get_running_loop().create_future()
        if not self._queued:
            asyncio.get_running_loop().call_soon(self._flush_queued)
        self._queued.append((keys, args, future))
        return await future

    def _flush_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued[:GATE_PIPELINE_SIZE_MAX], self._queued[GATE_PIPELINE_SIZE_MAX:]
            task = asyncio.create_task(self._flush(batch))
            self._flushes.add(task)  # a reference until done, so the task is not collected mid-flight
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[tuple[list[str], list[object], asyncio.Future]]) -> None:
        try:
            if self._sha is None:
                self._sha = await self._client.script_load(_GATE)
            results = await self._pipeline(batch)
            if any(isinstance(result, NoScriptError) for result in results):  # Redis lost its script cache
                self._sha = await self._client.script_load(_GATE)
                results = await self._pipeline(batch)
        except Exception as exc:  # every waiter gets the failure (RedisError, OSError: fail open)
            results = [exc] * len(batch)
        for (_, _, future), result in zip(batch, results):
            if future.done():  # its request gave up waiting
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _pipeline(self, batch) -> list:
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                pipe.evalsha(self._sha, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)

    async def pass_(self, key_id: str, *, charge: bool = True, wallet_key: str = "", claim_key: str = "",
                    claim_value: str = "", claim_ttl_s: int = 0) -> Passage:
        """Charge one request to the key's rate (unless `charge` is False: already charged) and read / claim
        what is asked, in one round trip; no round trip when there is nothing to do.

        Fails open: when Redis is down or slow the request is allowed and counted, because refusing every
        payment while a cache is down hurts more than an unmetered minute.
        """
        if not (charge or wallet_key or claim_key):
            return Passage()
        keys = [RATE_KEY_PREFIX + key_id, wallet_key, claim_key]
        args = [int(time.time() * 1_000_000), self._interval_us, self._burst, claim_value, claim_ttl_s,
                "1" if charge else "0"]
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
