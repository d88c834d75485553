"""The HTTP API (aiohttp): the app, its middleware, operations routes and the route table.

A plain aiohttp app rather than Faust's web view: the API must run without a processor in the same
process, scale on its own, and own its middlewares (auth, problem+json, metrics). docs/DESIGN.md has
the reasoning. Routes live in `web.reads` and `web.writes`; docs/API.md explains the contract.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy import select

from readside.mysql import make_engine
from readside.redis import make_client
from app.http_listener import BurstAcceptSite
from app.settings import Settings
from web import reads, writes
from web.access import meter_refusals
from web.auth import ApiKeys
from web.context import (API_KEYS, GATEWAY, KAFKA_ADMIN, MYSQL, MYSQL_PRIMARY, OWNERS, RATE_LIMITER, REDIS,
                         SETTINGS, TABLE_CLIENT, WALLET_CURRENCIES)
from web.owners import OwnerDirectory
from web.problems import ProblemError, problem

log = logging.getLogger("wallet.web")

__all__ = ["SETTINGS", "create_app", "serve"]

# Bound of each dependency check of /readyz.
READY_CHECK_TIMEOUT_S = 2.0
# Largest request body accepted; commands are small JSON documents.
REQUEST_BODY_BYTES_MAX = 16 * 1024
# Problem codes of the HTTP errors aiohttp raises itself (unknown route, wrong method, body too large).
_HTTP_ERROR_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}

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
        code = _HTTP_ERROR_CODES.get(exc.status, exc.reason.upper().replace(" ", "_"))
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = problem(exc.status, code, exc.reason, "", headers)
    except Exception:  # a fault: log it with its trace, give the client no internals
        log.exception("unhandled error", extra={"route": route})
        response = problem(500, "INTERNAL", "Internal error", "the error was logged")
    counted = _REQUEST_METRICS.get((request.method, route, response.status))
    if counted is None:
        counted = _request_metrics(request.method, route, response.status)
    counted[0].inc()
    counted[1].observe(time.perf_counter() - started)
    return response


# (method, route, status) -> the two metric children: `labels()` builds a key and takes a lock on every call,
# a few microseconds of every request. It holds one entry per child the metrics themselves keep.
_REQUEST_METRICS: dict[tuple[str, str, int], tuple] = {}


def _request_metrics(method: str, route: str, status: int) -> tuple:
    children = (http_requests_total.labels(method, route, str(status)), http_request_seconds.labels(method, route))
    _REQUEST_METRICS[(method, route, status)] = children
    return children


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
        from readside.mysql import poll_replica_lag

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


def create_app(settings: Settings, api_keys: ApiKeys, registry=None) -> web.Application:
    """The API app; `registry` (a SchemaRegistry) enables the write routes' Kafka gateway at start-up."""
    from web.commands import CommandGateway
    from web.ratelimit import RateLimiter

    app = web.Application(middlewares=[observe, meter_refusals], client_max_size=REQUEST_BODY_BYTES_MAX)
    app[SETTINGS] = settings
    app[API_KEYS] = api_keys
    app[WALLET_CURRENCIES] = {}

    async def stores(app: web.Application) -> AsyncIterator[None]:
        app[REDIS] = make_client(settings.redis_url, settings.redis_connections_max)
        app[RATE_LIMITER] = RateLimiter(app[REDIS], settings.rate_limit_per_s, settings.rate_limit_burst)
        app[MYSQL] = make_engine(settings.mysql_replica_dsn or settings.mysql_dsn)
        app[MYSQL_PRIMARY] = make_engine(settings.mysql_dsn) if settings.mysql_replica_dsn else app[MYSQL]
        app[KAFKA_ADMIN] = {"client": None}
        app[OWNERS] = OwnerDirectory(settings)
        app[TABLE_CLIENT] = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.table_read_timeout_ms / 1000))
        gateway = None
        if registry is not None:
            gateway = await asyncio.to_thread(CommandGateway, settings, registry)
            await gateway.start()
        app[GATEWAY] = gateway
        yield
        if gateway is not None:
            await gateway.stop()
        await app[TABLE_CLIENT].close()
        await app[RATE_LIMITER].aclose()
        await app[REDIS].aclose()
        await app[MYSQL].dispose()
        if app[MYSQL_PRIMARY] is not app[MYSQL]:
            await app[MYSQL_PRIMARY].dispose()
        if app[KAFKA_ADMIN]["client"] is not None:
            await app[KAFKA_ADMIN]["client"].close()

    app.cleanup_ctx.append(stores)
    add_routes(app.router)
    return app


def add_routes(router: web.UrlDispatcher) -> None:
    """The whole route table (the OpenAPI document is checked against it)."""
    from web.openapi import docs_view, openapi_view

    router.add_post("/v1/wallets", writes.open_wallet)
    router.add_get("/v1/wallets/{wallet_id}", reads.get_wallet)
    router.add_get("/v1/wallets/{wallet_id}/balance", reads.get_balance)
    router.add_get("/v1/wallets/{wallet_id}/entries", reads.get_entries)
    router.add_post("/v1/wallets/{wallet_id}/deposits", writes.deposit)
    router.add_post("/v1/wallets/{wallet_id}/withdrawals", writes.withdraw)
    router.add_post("/v1/wallets/{wallet_id}/holds", writes.place_hold)
    router.add_post("/v1/wallets/{wallet_id}/holds/{hold_id}/capture", writes.capture_hold)
    router.add_post("/v1/wallets/{wallet_id}/holds/{hold_id}/release", writes.release_hold)
    router.add_post("/v1/wallets/{wallet_id}/freeze", writes.freeze)
    router.add_post("/v1/wallets/{wallet_id}/unfreeze", writes.unfreeze)
    router.add_post("/v1/wallets/{wallet_id}/close", writes.close)
    router.add_post("/v1/transfers", writes.transfer)
    router.add_get("/v1/transfers/{transfer_id}", reads.get_transfer)
    router.add_get("/v1/commands/{command_id}", reads.get_command)
    router.add_get("/healthz", healthz)
    router.add_get("/readyz", readyz)
    router.add_get("/metrics", metrics_view)
    router.add_get("/openapi.json", openapi_view)
    router.add_get("/docs", docs_view)


async def serve(settings: Settings, api_keys: ApiKeys, ready: asyncio.Event | None = None, registry=None) -> None:
    """Serve until cancelled; a failure of the reply listener ends it (and the worker) with the error."""
    app = create_app(settings, api_keys, registry)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = BurstAcceptSite(runner, settings.http_host, settings.http_port, backlog=settings.http_listen_backlog,
                           accept_burst_max=settings.http_accept_burst_max)
    await site.start()
    if ready is not None:
        ready.set()
    try:
        gateway = app[GATEWAY]
        await (gateway.listening if gateway is not None else asyncio.Event().wait())
    finally:
        await runner.cleanup()
