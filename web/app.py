"""The HTTP API (aiohttp): a thin view over the read models and the command topic.

A plain aiohttp app rather than Faust's web view: the API must run without a processor in the same
process, scale on its own, and own its middlewares (auth, problem+json, metrics).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from agents.mysql_sink import make_engine
from agents.redis_sink import make_client, wallet_key
from app.readmodel import wallets
from app.settings import Settings
from web.amounts import format_minor
from web.auth import ApiKeys, Principal
from web.problems import ProblemError, problem

log = logging.getLogger("wallet.web")

SETTINGS = web.AppKey("settings", Settings)
API_KEYS = web.AppKey("api_keys", ApiKeys)
REDIS = web.AppKey("redis", object)
MYSQL = web.AppKey("mysql", AsyncEngine)
MYSQL_PRIMARY = web.AppKey("mysql_primary", AsyncEngine)
# {"client": AIOKafkaAdminClient | None}: started on the first /readyz, so the API starts without Kafka.
KAFKA_ADMIN = web.AppKey("kafka_admin", dict)
# Bound of each dependency check of /readyz.
READY_CHECK_TIMEOUT_S = 2.0
# Largest request body accepted; commands are small JSON documents.
REQUEST_BODY_BYTES_MAX = 16 * 1024
# Bound of every read-model call made while serving a request.
STORE_TIMEOUT_S = 2.0
WALLET_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

http_requests_total = Counter("wallet_http_requests_total", "HTTP requests by route and status.",
                              ["method", "route", "status"])
http_request_seconds = Histogram(
    "wallet_http_request_seconds", "HTTP request latency by route.", ["method", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))



@web.middleware
async def observe(request: web.Request, handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        response = await handler(request)
    except ProblemError as exc:
        response = exc.response
    except web.HTTPException as exc:
        response = problem(exc.status, exc.reason.upper().replace(" ", "_"), exc.reason)
    except Exception:  # a fault: log it with its trace, give the client no internals
        log.exception("unhandled error", extra={"route": route})
        response = problem(500, "INTERNAL", "Internal error", "the error was logged")
    http_requests_total.labels(request.method, route, str(response.status)).inc()
    http_request_seconds.labels(request.method, route).observe(time.perf_counter() - started)
    return response


def require(request: web.Request, scope: str) -> Principal:
    principal = request.app[API_KEYS].authenticate(request.headers.get("Authorization"))
    if principal is None:
        raise ProblemError(401, "UNAUTHORIZED", "Missing or unknown API key",
                           "send Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})
    if scope not in principal.scopes and "admin" not in principal.scopes:
        raise ProblemError(403, "FORBIDDEN", "Missing scope", f"this route needs the {scope} scope")
    return principal


def _wallet_id(request: web.Request) -> str:
    wallet_id = request.match_info["wallet_id"]
    if WALLET_ID_RE.fullmatch(wallet_id) is None:
        raise ProblemError(400, "INVALID_WALLET_ID", "Invalid wallet id", "wallet ids match [A-Za-z0-9_-]{1,64}")
    return wallet_id


async def _position_from_redis(request: web.Request, wallet_id: str) -> dict[str, str] | None:
    try:
        found = await asyncio.wait_for(request.app[REDIS].hgetall(wallet_key(wallet_id)), STORE_TIMEOUT_S)
    except (RedisError, OSError, asyncio.TimeoutError):
        return None  # fall back to MySQL
    return found or None


async def _position_from_mysql(request: web.Request, wallet_id: str) -> dict[str, object] | None:
    query = select(wallets).where(wallets.c.wallet_id == wallet_id)
    try:
        async with request.app[MYSQL].connect() as conn:
            row = (await asyncio.wait_for(conn.execute(query), STORE_TIMEOUT_S)).mappings().first()
    except (SQLAlchemyError, OSError, asyncio.TimeoutError) as exc:
        raise ProblemError(503, "STORE_UNAVAILABLE", "Read model unavailable", "try again shortly") from exc
    if row is None:
        return None
    return {"balance": row["balance_minor"], "available": row["available_minor"], "held": row["held_minor"],
            "version": row["version"], "currency": row["currency"], "status": row["status"],
            "owner_id": row["owner_id"]}


async def get_balance(request: web.Request) -> web.Response:
    require(request, "wallets:read")
    wallet_id = _wallet_id(request)
    position = await _position_from_redis(request, wallet_id) or await _position_from_mysql(request, wallet_id)
    if position is None:
        raise ProblemError(404, "WALLET_NOT_FOUND", "Unknown wallet", f"no wallet {wallet_id}")
    currency = str(position["currency"])
    return web.json_response({
        "wallet_id": wallet_id, "currency": currency, "status": position["status"],
        "balance": format_minor(int(position["balance"]), currency),
        "available": format_minor(int(position["available"]), currency),
        "held": format_minor(int(position["held"]), currency),
        "version": int(position["version"]),
    })


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _check(name: str, probe) -> tuple[str, dict[str, object]]:
    """Run one dependency probe with a deadline; a probe returns extra detail or raises."""
    try:
        detail = await asyncio.wait_for(probe(), READY_CHECK_TIMEOUT_S)
        return name, {"ok": True, **(detail or {})}
    except Exception as exc:  # any failure of a dependency is "not ready", with its type for the operator
        return name, {"ok": False, "error": type(exc).__name__}


async def readyz(request: web.Request) -> web.Response:
    """200 when Kafka, MySQL (primary and replica) and Redis answer; 503 with the failing checks otherwise."""
    app, settings = request.app, request.app[SETTINGS]

    async def kafka():
        from aiokafka.admin import AIOKafkaAdminClient

        holder = app[KAFKA_ADMIN]
        if holder["client"] is None:
            client = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                         request_timeout_ms=int(READY_CHECK_TIMEOUT_S * 1000))
            await client.start()
            holder["client"] = client
        await holder["client"].list_topics()

    async def mysql_primary():
        async with app[MYSQL_PRIMARY].connect() as conn:
            await conn.execute(select(1))

    async def mysql_replica():
        from agents.mysql_sink import poll_replica_lag

        lag_s = await poll_replica_lag(app[MYSQL])
        if lag_s is None:
            raise ConnectionError("replication stopped or replica unreachable")
        return {"lag_s": lag_s}

    async def redis():
        await app[REDIS].ping()

    probes = [("kafka", kafka), ("mysql_primary", mysql_primary), ("redis", redis)]
    if settings.mysql_replica_dsn:
        probes.append(("mysql_replica", mysql_replica))
    checks = dict(await asyncio.gather(*(_check(name, probe) for name, probe in probes)))
    ready = all(check["ok"] for check in checks.values())
    return web.json_response({"status": "ready" if ready else "not ready", "checks": checks},
                             status=200 if ready else 503)


async def metrics_view(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(settings: Settings, api_keys: ApiKeys) -> web.Application:
    app = web.Application(middlewares=[observe], client_max_size=REQUEST_BODY_BYTES_MAX)
    app[SETTINGS] = settings
    app[API_KEYS] = api_keys

    async def stores(app: web.Application) -> AsyncIterator[None]:
        app[REDIS] = make_client(settings.redis_url)
        app[MYSQL] = make_engine(settings.mysql_replica_dsn or settings.mysql_dsn)
        app[MYSQL_PRIMARY] = make_engine(settings.mysql_dsn) if settings.mysql_replica_dsn else app[MYSQL]
        app[KAFKA_ADMIN] = {"client": None}
        yield
        await app[REDIS].aclose()
        await app[MYSQL].dispose()
        if app[MYSQL_PRIMARY] is not app[MYSQL]:
            await app[MYSQL_PRIMARY].dispose()
        if app[KAFKA_ADMIN]["client"] is not None:
            await app[KAFKA_ADMIN]["client"].close()

    app.cleanup_ctx.append(stores)
    app.router.add_get("/v1/wallets/{wallet_id}/balance", get_balance)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app


async def serve(settings: Settings, api_keys: ApiKeys, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled."""
    runner = web.AppRunner(create_app(settings, api_keys), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    await site.start()
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
