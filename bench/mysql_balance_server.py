"""The baseline of `wallet bench http`: the balance served straight from MySQL on every request.

The seed's read path: a minimal aiohttp server whose `GET /v1/wallets/{wallet_id}/balance` checks the
same Bearer keys, runs one `SELECT` of the wallets row through SQLAlchemy/aiomysql, and answers the same
JSON body as the API. No Redis, no metrics middleware, no fallbacks: whatever the API costs beyond this
is the price of its extras, and whatever it saves is the read model's gain.

Run by the bench as a child process:
    python -m bench.mysql_balance_server --port 18080
(the DSN, host and keys come from `WALLET_*` like every other process).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import AsyncIterator

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from readside.mysql import make_engine
from readside.readmodel import wallets
from app.settings import Settings
from web.amounts import format_minor
from web.auth import ApiKeys

ENGINE = web.AppKey("engine", AsyncEngine)
API_KEYS = web.AppKey("api_keys", ApiKeys)
# Bound of the one query per request, as in the API.
QUERY_TIMEOUT_S = 2.0


async def get_balance(request: web.Request) -> web.Response:
    principal = request.app[API_KEYS].authenticate(request.headers.get("Authorization"))
    if principal is None:
        return web.json_response({"code": "UNAUTHORIZED"}, status=401)
    wallet_id = request.match_info["wallet_id"]
    query = select(wallets).where(wallets.c.wallet_id == wallet_id)
    async with request.app[ENGINE].connect() as conn:
        row = (await asyncio.wait_for(conn.execute(query), QUERY_TIMEOUT_S)).mappings().first()
    if row is None:
        return web.json_response({"code": "WALLET_NOT_FOUND"}, status=404)
    currency = row["currency"]
    return web.json_response({
        "wallet_id": wallet_id, "currency": currency, "status": row["status"],
        "balance": format_minor(row["balance_minor"], currency),
        "available": format_minor(row["available_minor"], currency),
        "held": format_minor(row["held_minor"], currency),
        "version": row["version"],
    })


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(dsn: str, api_keys: ApiKeys) -> web.Application:
    app = web.Application()
    app[API_KEYS] = api_keys

    async def engine(app: web.Application) -> AsyncIterator[None]:
        app[ENGINE] = make_engine(dsn)  # the API's own engine settings (pool size, pre-ping)
        yield
        await app[ENGINE].dispose()

    app.cleanup_ctx.append(engine)
    app.router.add_get("/v1/wallets/{wallet_id}/balance", get_balance)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mysql_balance_server")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = Settings.from_env()
    # The database the API falls back to: the replica when one is configured, as web/app.py does.
    dsn = settings.mysql_replica_dsn or settings.mysql_dsn
    web.run_app(create_app(dsn, ApiKeys(settings.api_keys)), host=settings.http_host, port=args.port,
                access_log=None, print=None)


if __name__ == "__main__":
    main()
