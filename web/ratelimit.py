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

Calls are auto-pipelined: the calls made in one turn of the event loop go to Redis as one write on one
connection of the limiter's own (`GateConnection`: RESP framed by hand, replies parsed by hiredis), so a busy
web process pays neither redis-py's per-call cost (connection checkout, pipeline object, argument encoding)
nor a round trip per request. The limiter takes its address, password and database from the app's redis-py
client; every other Redis call of the API goes through that client.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass

import hiredis
from prometheus_client import Counter
from redis.exceptions import RedisError, ResponseError

RATE_KEY_PREFIX = "ratelimit:"
# Bound of the Redis call; past it the request is let through (the limit fails open, see `RateLimiter.pass_`).
RATE_LIMIT_TIMEOUT_S = 0.5
# Most gate calls sent to Redis in one pipeline.
GATE_PIPELINE_SIZE_MAX = 256
# Bound of connecting the gate's connection (and of its AUTH, SELECT and SCRIPT LOAD).
GATE_CONNECT_TIMEOUT_S = 2.0
# A gate connection whose oldest unanswered pipeline is older than this is dropped (its callers already
# gave up after RATE_LIMIT_TIMEOUT_S); the next call connects again. Bounds what waits on a stuck Redis.
GATE_STALL_S = 4 * RATE_LIMIT_TIMEOUT_S

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


def _command(*args: object) -> bytes:
    """One Redis command in RESP (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class GateConnection(asyncio.Protocol):
    """One connection to Redis for the gate's pipelines: each `send` writes a pipeline of commands and gets a
    future of their replies, in order (Redis answers a connection's commands in the order they came).

    A reply that is an error comes back as a `ResponseError` in the list. A lost or stalled connection fails
    every pipeline waiting on it with ConnectionError; `closed` is then True and the limiter connects anew.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader(encoding="utf-8")
        self._waiting: deque[tuple[int, list, asyncio.Future, float]] = deque()  # count, replies, future, sent at
        self.closed = False

    def connection_made(self, transport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                count, replies, future, _ = self._waiting[0]
                replies.append(ResponseError(str(reply)) if isinstance(reply, hiredis.ReplyError) else reply)
                if len(replies) == count:
                    self._waiting.popleft()
                    if not future.done():
                        future.set_result(replies)
        except (hiredis.ProtocolError, IndexError) as exc:  # not RESP, or a reply nobody asked for
            self._fail(ConnectionError(f"redis sent what the gate cannot read: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"redis connection lost: {exc!r}"))

    def _fail(self, error: Exception) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()
        while self._waiting:
            future = self._waiting.popleft()[2]
            if not future.done():
                future.set_exception(error)

    def send(self, commands: list[bytes]) -> asyncio.Future:
        """Write `commands` as one pipeline; the future gets their replies in order."""
        future = asyncio.get_running_loop().create_future()
        now = time.monotonic()
        if self.closed:
            future.set_exception(ConnectionError("redis connection closed"))
            return future
        if self._waiting and now - self._waiting[0][3] > GATE_STALL_S:
            self._fail(ConnectionError(f"redis left a pipeline unanswered for {GATE_STALL_S} s"))
            future.set_exception(ConnectionError("redis connection dropped: stalled"))
            return future
        self._waiting.append((len(commands), [], future, now))
        self._transport.write(b"".join(commands))
        return future

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class RateLimiter:
    def __init__(self, client, per_s: int, burst: int) -> None:
        self._client = client
        self._sha: str | None = None
        self._interval_us = max(1, 1_000_000 // per_s)
        self._burst = burst
        self._queued: list[tuple[list[str], list[object], asyncio.Future]] = []
        self._flushes: set[asyncio.Task] = set()
        self._connection: GateConnection | None = None
        self._connecting = asyncio.Lock()

    async def _connected(self) -> GateConnection:
        """The gate's connection, (re)connected with the client's address, password and database."""
        if self._connection is not None and not self._connection.closed:
            return self._connection
        async with self._connecting:
            if self._connection is None or self._connection.closed:
                self._connection = await asyncio.wait_for(self._connect(), GATE_CONNECT_TIMEOUT_S)
        return self._connection

    async def _connect(self) -> GateConnection:
        options = self._client.connection_pool.connection_kwargs
        loop = asyncio.get_running_loop()
        if options.get("path"):
            _, connection = await loop.create_unix_connection(GateConnection, options["path"])
        else:
            _, connection = await loop.create_connection(GateConnection, options.get("host", "localhost"),
                                                         options.get("port", 6379))
        setup = []
        if options.get("password"):
            setup.append(_command("AUTH", *filter(None, [options.get("username"), options["password"]])))
        if options.get("db"):
            setup.append(_command("SELECT", options["db"]))
        setup.append(_command("SCRIPT", "LOAD", _GATE))
        replies = await connection.send(setup)
        for reply in replies:
            if isinstance(reply, Exception):
                connection.close()
                raise reply
        self._sha = replies[-1]
        return connection

    async def aclose(self) -> None:
        if self._connection is not None:
            self._connection.close()

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
            results = await self._pipeline(batch)
            if any(isinstance(result, ResponseError) and str(result).startswith("NOSCRIPT") for result in results):
                # Redis lost its script cache (a restart, SCRIPT FLUSH): load it again, send the batch again.
                replies = await (await self._connected()).send([_command("SCRIPT", "LOAD", _GATE)])
                if isinstance(replies[0], Exception):
                    raise replies[0]
                self._sha = replies[0]
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
        connection = await self._connected()
        return await connection.send([_command("EVALSHA", self._sha, len(keys), *keys, *args)
                                      for keys, args, _ in batch])

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
