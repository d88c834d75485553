"""Read routes: wallets and balances (Redis, the owning table, MySQL), history, transfers, commands.

Where a wallet's position comes from:
- default: Redis (the hot read model); on a miss, an error or a version older than `min_version`, the
  table of the processor that owns the wallet's partition; when that does not answer, the MySQL primary.
- `consistency=strong`: the owning table only (503 when it does not answer).
- `at=`: the replica (balance after the last entry at or before the time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from readside.redis import wallet_key
from tables.document import TABLE_PATH
from app.intake import PUBLIC_COMMAND_ID_RE, WALLET_ID_RE
from app.kafka import partition_for
from readside.readmodel import balance_at, command_outcomes, ledger_entries, transfers, wallets
from readside.errors import StoreUnavailable
from web import render, validation
from web.access import READ, authorize, pass_gate
from web.amounts import format_minor
from web.context import MYSQL, MYSQL_PRIMARY, OWNERS, REDIS, SETTINGS, TABLE_CLIENT, WALLET_CURRENCIES
from web.problems import ProblemError
from web.ratelimit import Passage

log = logging.getLogger("wallet.web.reads")

# Bound of every Redis and MySQL call made while serving a request.
STORE_TIMEOUT_S = 2.0
# Pause between two attempts to find a moving partition's new owner (within table_read_timeout_ms).
TABLE_OWNER_RETRY_S = 0.1
# Redis key of a command the API answered 202 for, so `/v1/commands/{id}` can say "pending" until the
# MySQL projection has its outcome.
PENDING_KEY_PREFIX = "pending-command:"
ENTRIES_LIMIT_DEFAULT = 50
ENTRIES_LIMIT_MAX = 200
_MONEY = ("balance", "available", "held")


def unavailable(what: str) -> ProblemError:
    return ProblemError(503, "STORE_UNAVAILABLE", "Read model unavailable", f"{what} did not answer; try again")


def wallet_not_found(wallet_id: str) -> ProblemError:
    return ProblemError(404, "WALLET_NOT_FOUND", "Unknown wallet", f"no wallet {wallet_id}")


def path_wallet_id(request: web.Request) -> str:
    return validation.path_id(request, "wallet_id", WALLET_ID_RE, "INVALID_WALLET_ID")


# ---------------------------------------------------------------- the three sources of a position


async def from_redis(app: web.Application, wallet_id: str) -> dict[str, Any] | None:
    try:
        async with asyncio.timeout(STORE_TIMEOUT_S):
            found = await app[REDIS].hgetall(wallet_key(wallet_id))
    except (RedisError, OSError, TimeoutError) as exc:
        raise StoreUnavailable("redis") from exc
    return redis_position(found)


def redis_position(found: dict[str, str] | None) -> dict[str, Any] | None:
    """A wallet hash as the Redis sink writes it, as a position; None when Redis has no (whole) wallet."""
    if not found or "currency" not in found:
        return None
    position = {name: int(found[name]) for name in _MONEY}
    return {"owner_id": found.get("owner_id", ""), "currency": found["currency"],
            "status": found.get("status", "ACTIVE"), "version": int(found["version"]),
            **{name + "_minor": value for name, value in position.items()}}


async def from_table(app: web.Application, wallet_id: str, min_version: int = 0, *,
                     wait_for_owner: bool = True) -> dict[str, Any] | None:
    """The committed state in the owning processor's table, waiting (bounded) for `min_version`.

    The owner comes from the live group (web/owners.py). While the partition moves (no stable owner, or
    the old owner answers 421), it asks again until `table_read_timeout_ms` when `wait_for_owner` (strong
    and min_version reads); then, or at once otherwise, StoreUnavailable.
    """
    settings = app[SETTINGS]
    partition = partition_for(wallet_id.encode(), settings.partitions)
    deadline = time.monotonic() + settings.table_read_timeout_ms / 1000
    wait_ms = settings.table_read_timeout_ms // 2 if min_version else 0
    refresh = False
    while True:
        try:
            base = await app[OWNERS].owner(partition, refresh=refresh)
            if base is not None:
                async with app[TABLE_CLIENT].get(base + TABLE_PATH.format(wallet_id=wallet_id),
                                                 params={"min_version": str(min_version),
                                                         "timeout_ms": str(wait_ms)}) as response:
                    if response.status == 404:
                        return None
                    if response.status == 200:
                        return await response.json()
                    if response.status != 421:  # 421: not (or no longer, or not yet) the owner
                        raise StoreUnavailable(f"table answered {response.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            if time.monotonic() >= deadline or not wait_for_owner:
                raise StoreUnavailable("table") from exc
        if time.monotonic() >= deadline or not wait_for_owner:
            raise StoreUnavailable(f"partition {partition} has no owner ready (moving)")
        refresh = True
        await asyncio.sleep(TABLE_OWNER_RETRY_S)


async def primary_row(app: web.Application, query) -> dict[str, Any] | None:
    """The first row of `query` on the MySQL primary (None when there is none); StoreUnavailable when it fails."""
    try:
        async with app[MYSQL_PRIMARY].connect() as conn:
            row = (await asyncio.wait_for(conn.execute(query), STORE_TIMEOUT_S)).mappings().first()
    except (SQLAlchemyError, OSError, asyncio.TimeoutError) as exc:
        raise StoreUnavailable("mysql") from exc
    return None if row is None else dict(row)


async def from_mysql(app: web.Application, wallet_id: str) -> dict[str, Any] | None:
    return await primary_row(app, select(wallets).where(wallets.c.wallet_id == wallet_id))


async def locate(app: web.Application, wallet_id: str, *, strong: bool = False, min_version: int = 0,
                 passage: Passage | None = None) -> dict[str, Any] | None:
    """The wallet's position (`*_minor` ints, currency, status, owner_id, version), None if it does not exist.

    `passage`: the request's gate call, which may already have read the wallet's Redis hash."""
    if not strong:
        try:
            if passage is not None and passage.wallet is not None:
                found = redis_position(passage.wallet)
            elif passage is not None and not passage.redis_ok:
                found = None  # Redis just failed this request: do not wait on it twice
            else:
                found = await from_redis(app, wallet_id)
            if found is not None and found["version"] >= min_version:
                return found
        except StoreUnavailable:
            pass  # the table, then MySQL
    try:
        found = await from_table(app, wallet_id, min_version, wait_for_owner=strong or min_version > 0)
    except StoreUnavailable:
        if strong:
            raise ProblemError(503, "TABLE_UNAVAILABLE", "Owning processor unavailable",
                               "a strong read needs the processor that owns this wallet (its partition may be "
                               "moving); try again", {"Retry-After": "1"}) from None
    else:
        if found is not None and found["version"] < min_version:
            # The table is the truth: the version asked for does not exist (yet). Never answer older.
            raise ProblemError(412, "MIN_VERSION_NOT_REACHED", "Version not reached",
                               f"wallet {wallet_id} is at version {found['version']}, below {min_version}")
        return found
    try:
        found = await from_mysql(app, wallet_id)
    except StoreUnavailable:
        raise unavailable("no read store") from None
    if found is not None and found["version"] < min_version:
        raise unavailable(f"no store has version {min_version} yet")
    return found


async def wallet_currency(app: web.Application, wallet_id: str, passage: Passage | None = None) -> str | None:
    """The currency of an existing wallet (None when it does not exist); remembered once known.

    `passage`: a gate call that may already have read the wallet's Redis hash (see `locate`)."""
    cache = app[WALLET_CURRENCIES]
    currency = cache.get(wallet_id)
    if currency is None:
        found = await locate(app, wallet_id, passage=passage)
        if found is None:
            return None
        currency = remember_currency(app, wallet_id, found["currency"])
    return currency


def remember_currency(app: web.Application, wallet_id: str, currency: str) -> str:
    cache = app[WALLET_CURRENCIES]
    if len(cache) >= app[SETTINGS].wallet_cache_size_max:
        cache.clear()  # bounded; a miss only costs a lookup
    cache[wallet_id] = currency
    return currency


# ---------------------------------------------------------------- routes


def _consistency(request: web.Request) -> tuple[bool, int]:
    strong = validation.query_choice(request, "consistency", ("eventual", "strong")) == "strong"
    return strong, validation.query_int(request, "min_version", 0, 0, 2**53)


async def _gate_reading(request: web.Request, wallet_id: str, strong: bool) -> Passage:
    """The rate limit, with the wallet's Redis hash read in the same round trip when Redis will be used."""
    return await pass_gate(request, wallet_key="" if strong else wallet_key(wallet_id))


async def get_wallet(request: web.Request) -> web.Response:
    await authorize(request, READ, limit_now=False)
    wallet_id = path_wallet_id(request)
    strong, min_version = _consistency(request)
    passage = await _gate_reading(request, wallet_id, strong)
    found = await locate(request.app, wallet_id, strong=strong, min_version=min_version, passage=passage)
    if found is None:
        raise wallet_not_found(wallet_id)
    return web.json_response(render.position(wallet_id, found, with_owner=True))


async def get_balance(request: web.Request) -> web.Response:
    await authorize(request, READ, limit_now=False)
    wallet_id = path_wallet_id(request)
    at_ms = validation.query_time_ms(request, "at")
    strong, min_version = _consistency(request)
    passage = await _gate_reading(request, wallet_id, strong or at_ms is not None)
    if at_ms is None:
        found = await locate(request.app, wallet_id, strong=strong, min_version=min_version, passage=passage)
        if found is None:
            raise wallet_not_found(wallet_id)
        return web.json_response(render.position(wallet_id, found, with_owner=False))
    if strong or min_version:
        raise validation.invalid("at cannot be combined with consistency or min_version")
    currency = await wallet_currency(request.app, wallet_id)
    if currency is None:
        raise wallet_not_found(wallet_id)
    try:
        async with request.app[MYSQL].connect() as conn:
            row = await asyncio.wait_for(balance_at(conn, wallet_id, at_ms), STORE_TIMEOUT_S)
    except (SQLAlchemyError, OSError, asyncio.TimeoutError):
        raise unavailable("the history store") from None
    if row is None:
        raise ProblemError(404, "WALLET_NOT_FOUND", "No balance at that time",
                           f"wallet {wallet_id} has no entry at or before {request.query['at']}")
    return web.json_response({
        "wallet_id": wallet_id, "currency": currency, "at": render.rfc3339(at_ms),
        "balance": format_minor(row["balance_after_minor"], currency),
        "available": format_minor(row["available_after_minor"], currency),
        "held": format_minor(row["held_after_minor"], currency), "version": row["version"]})


async def get_entries(request: web.Request) -> web.Response:
    """History newest first; the cursor is the version below which the next page starts."""
    await authorize(request, READ)
    wallet_id = path_wallet_id(request)
    limit = validation.query_int(request, "limit", ENTRIES_LIMIT_DEFAULT, 1, ENTRIES_LIMIT_MAX)
    cursor = request.query.get("cursor")
    if cursor is not None and (not cursor.isdigit() or len(cursor) > 16 or int(cursor) < 1):
        raise validation.invalid("cursor is not one this API returned", "INVALID_CURSOR")
    currency = await wallet_currency(request.app, wallet_id)
    if currency is None:
        raise wallet_not_found(wallet_id)
    query = select(ledger_entries).where(ledger_entries.c.wallet_id == wallet_id)
    if cursor is not None:
        query = query.where(ledger_entries.c.version < int(cursor))
    query = query.order_by(ledger_entries.c.version.desc()).limit(limit + 1)
    try:
        async with request.app[MYSQL].connect() as conn:
            rows = (await asyncio.wait_for(conn.execute(query), STORE_TIMEOUT_S)).mappings().all()
    except (SQLAlchemyError, OSError, asyncio.TimeoutError):
        raise unavailable("the history store") from None
    page = rows[:limit]
    next_cursor = str(page[-1]["version"]) if len(rows) > limit else None
    return web.json_response({"wallet_id": wallet_id, "entries": [render.entry(row, currency) for row in page],
                              "next_cursor": next_cursor})


async def _status_row(request: web.Request, query) -> dict[str, Any] | None:
    try:
        return await primary_row(request.app, query)
    except StoreUnavailable:
        raise unavailable("MySQL") from None


async def get_transfer(request: web.Request) -> web.Response:
    """The latest transfer (by debit time) under the id, or with `?source_wallet_id=` that source's latest: one
    id may name transfers of several sources, and one source's id again after the command retention."""
    await authorize(request, READ)
    transfer_id = validation.path_id(request, "transfer_id", PUBLIC_COMMAND_ID_RE, "INVALID_TRANSFER_ID")
    source_wallet_id = validation.query_id(request, "source_wallet_id", WALLET_ID_RE, "INVALID_WALLET_ID")
    query = select(transfers).where(transfers.c.transfer_id == transfer_id)
    if source_wallet_id is not None:
        query = query.where(transfers.c.source_wallet_id == source_wallet_id)
    # Two sources debited in the same millisecond: the answer is still one and the same each time.
    latest = query.order_by(transfers.c.debited_at_ms.desc(), transfers.c.source_wallet_id.desc()).limit(1)
    row = await _status_row(request, latest)
    if row is None:
        of_source = "" if source_wallet_id is None else f" from {source_wallet_id}"
        raise ProblemError(404, "TRANSFER_NOT_FOUND", "Unknown transfer", f"no transfer {transfer_id}{of_source}")
    return web.json_response(render.transfer(row))


async def get_command(request: web.Request) -> web.Response:
    await authorize(request, READ)
    command_id = validation.path_id(request, "command_id", PUBLIC_COMMAND_ID_RE, "INVALID_COMMAND_ID")
    row = await _status_row(request, select(command_outcomes).where(command_outcomes.c.command_id == command_id))
    if row is not None:
        return web.json_response(render.command_outcome(row))
    try:
        pending = await asyncio.wait_for(request.app[REDIS].exists(PENDING_KEY_PREFIX + command_id), STORE_TIMEOUT_S)
    except (RedisError, OSError, asyncio.TimeoutError):
        pending = False
    if pending:
        return web.json_response({"command_id": command_id, "status": "pending"})
    raise ProblemError(404, "COMMAND_NOT_FOUND", "Unknown command",
                       f"no outcome for {command_id} (yet); commands answered 202 show as pending")
