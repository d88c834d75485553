"""The worker's own web view: `/metrics`, and reads of the processor's table for strong reads.

`GET /internal/v1/wallets/{wallet_id}?min_version=N` answers from the committed state of a partition this
worker owns (never a staged batch that may still abort), waiting up to `timeout_ms` for the state to reach
version N: the API routes `?consistency=strong` and `min_version` reads here, to the worker the live group
assignment names (web/owners.py). 421 when this worker does not own the partition, or is still catching it
up: the partition is moving, and the API asks the group again.
Internal: it listens on the worker port, which is not exposed outside the deployment's network.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.http_listener import BurstAcceptSite
from app.kafka import partition_for
from app.settings import Settings
from tables.document import TABLE_PATH, wallet_document

if TYPE_CHECKING:
    from agents.processor import Processor

PROCESSOR = web.AppKey("processor", object)
SETTINGS = web.AppKey("settings", Settings)
# The longest a strong read may wait for a version the table does not have yet.
TABLE_WAIT_MS_MAX = 10_000


async def read_wallet(request: web.Request) -> web.Response:
    processor: Processor | None = request.app[PROCESSOR]
    if processor is None:
        return web.json_response({"error": "no processor in this worker"}, status=421)
    wallet_id = request.match_info["wallet_id"]
    try:
        min_version = int(request.query.get("min_version", "0"))
        wait_ms = min(int(request.query.get("timeout_ms", "0")), TABLE_WAIT_MS_MAX)
    except ValueError:
        return web.json_response({"error": "min_version and timeout_ms are integers"}, status=400)
    store = processor.stores.get(partition_for(wallet_id.encode(), request.app[SETTINGS].partitions))
    if store is None:
        return web.json_response({"error": "this worker does not own the wallet's partition (now)"}, status=421)
    deadline = time.monotonic() + wait_ms / 1000
    while True:
        state = store.committed_wallet(wallet_id)
        version = state.version if state is not None else 0
        remaining = deadline - time.monotonic()
        if version >= min_version or remaining <= 0:
            break
        try:
            await asyncio.wait_for(processor.batch_applied().wait(), remaining)
        except asyncio.TimeoutError:
            pass
    if state is None:
        return web.json_response({"wallet_id": wallet_id, "version": 0}, status=404)
    return web.json_response(wallet_document(state))


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve(settings: Settings, port: int, processor: "Processor | None") -> None:
    """Serve the worker view on `port` until cancelled."""
    app = web.Application()
    app[PROCESSOR] = processor
    app[SETTINGS] = settings
    app.router.add_get("/metrics", metrics)
    app.router.add_get(TABLE_PATH, read_wallet)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await BurstAcceptSite(runner, settings.http_host, port, backlog=settings.http_listen_backlog,
                          accept_burst_max=settings.http_accept_burst_max).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
