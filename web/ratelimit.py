"""Per-API-key rate limit kept in Redis: GCRA (a token bucket without a refill timer).

One script call per request: it moves the key's theoretical arrival time forward by one emission
interval and refuses when that would put it more than `burst` intervals ahead of now. Every web process
shares the same counters, so the limit holds for the whole deployment.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from prometheus_client import Counter
from redis.exceptions import RedisError

log = logging.getLogger("wallet.web.ratelimit")

RATE_KEY_PREFIX = "ratelimit:"
# Bound of the Redis call; past it the request is let through (the limit fails open, see `allow`).
RATE_LIMIT_TIMEOUT_S = 0.5

# KEYS[1]: the key's counter. ARGV: now (µs), emission interval (µs), burst (requests).
# Returns 0 when allowed, else the µs to wait before a request would be allowed.
_GCRA = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local window = interval * tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > window then return new_tat - now - window end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
"""

rate_limited_total = Counter("wallet_http_rate_limited_total", "Requests refused by the per-key rate limit.")
rate_limit_unavailable_total = Counter(
    "wallet_http_rate_limit_unavailable_total",
    "Requests let through unchecked because Redis did not answer the rate limit in time.")


class RateLimiter:
    def __init__(self, client, per_s: int, burst: int) -> None:
        self._script = client.register_script(_GCRA)
        self._interval_us = max(1, 1_000_000 // per_s)
        self._burst = burst

    async def retry_after_s(self, key_id: str) -> int:
        """0 when the key may make a request now, else whole seconds to wait (at least 1).

        Fails open: when Redis is down or slow the request is allowed and counted, because refusing every
        payment while a cache is down hurts more than an unmetered minute.
        """
        try:
            wait_us = await asyncio.wait_for(
                self._script(keys=[RATE_KEY_PREFIX + key_id],
                             args=[int(time.time() * 1_000_000), self._interval_us, self._burst]),
                RATE_LIMIT_TIMEOUT_S)
        except (RedisError, OSError, asyncio.TimeoutError):
            rate_limit_unavailable_total.inc()
            return 0
        if not wait_us:
            return 0
        rate_limited_total.inc()
        return max(1, math.ceil(int(wait_us) / 1_000_000))
