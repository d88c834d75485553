"""A rolling restart of every processor worker while HTTP deposits flow at 200/s: no write fails.

Two processor workers share the partitions; a web process takes deposits. Each worker is restarted in turn
(SIGTERM, start again, wait until the group owns every partition again). A client that gets 202 (no outcome
within `wait_ms`) or 503 retries with the same Idempotency-Key, as the API tells it to; every request must end
in 200, and every balance must be exactly the sum of its deposits.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import prepare_topics
from tests.harness import WorkerProcess, http_json, isolated_settings, new_id, wait_for, wait_for_async

RATE_PER_S = 200
DURATION_S = 30
WALLETS = 20
# A request is retried (same key) until it gets a 200 or this much time passed since it was first sent.
REQUEST_DEADLINE_S = 60
WAIT_S = 90
# Deposits answered between two restarts (2 s of the load): each restart lands while writes flow and succeed.
ANSWERED_BETWEEN_RESTARTS = 2 * RATE_PER_S


def _owned(settings, instance: int) -> int:
    try:
        url = f"http://127.0.0.1:{settings.worker_web_port + instance}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0
    return int(sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "wallet_processor_partitions_owned"))


async def _deposit_until_200(session: aiohttp.ClientSession, base: str, wallet_id: str) -> int:
    """Send one deposit, retrying with its Idempotency-Key on 202/503/connection errors; the final status."""
    key = uuid.uuid4().hex
    deadline = time.monotonic() + REQUEST_DEADLINE_S
    status = 0
    while time.monotonic() < deadline:
        try:
            async with session.post(f"{base}/v1/wallets/{wallet_id}/deposits", json={"amount": "1.00"},
                                    headers={"Authorization": "Bearer test-write", "Idempotency-Key": key}) as reply:
                status = reply.status
        except (aiohttp.ClientError, asyncio.TimeoutError):
            status = 0
        if status == 200:
            return status
        if status not in (0, 202, 503):
            return status
        await asyncio.sleep(0.5)
    return status


async def test_every_http_write_succeeds_while_each_processor_worker_is_restarted_in_turn(stack):
    settings = prepare_topics(isolated_settings(stack, "rolling", processor_standby_replicas=1,
                                                rate_limit_per_s=2_000, rate_limit_burst=4_000))
    processors = [WorkerProcess(settings, ["processor"], instance=i) for i in range(2)]
    web = WorkerProcess(settings, ["web"], instance=2)
    for worker in (*processors, web):
        worker.start(wait_ready=False)
    for worker in (*processors, web):
        worker.wait_ready()
    base = f"http://127.0.0.1:{settings.http_port}"
    wallets = [new_id("rr") for _ in range(WALLETS)]
    for wallet_id in wallets:
        status, _, body = http_json("POST", f"{base}/v1/wallets", key="test-write",
                                    body={"wallet_id": wallet_id, "owner_id": "o", "currency": "EUR"})
        assert status == 201, body

    def all_owned() -> bool:
        return sum(_owned(settings, i) for i in range(len(processors))) == settings.partitions

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        requests: list[asyncio.Task] = []
        sent = {w: 0 for w in wallets}

        async def load() -> None:
            started = time.monotonic()
            for n in range(RATE_PER_S * DURATION_S):
                wallet_id = wallets[n % WALLETS]
                sent[wallet_id] += 1
                requests.append(asyncio.create_task(_deposit_until_200(session, base, wallet_id)))
                await asyncio.sleep(max(0.0, started + (n + 1) / RATE_PER_S - time.monotonic()))

        def answered() -> int:
            return sum(request.done() for request in requests)

        loading = asyncio.create_task(load())
        for worker in processors:  # the rolling restart, each after deposits were answered since the last
            target = answered() + ANSWERED_BETWEEN_RESTARTS

            async def enough_answered() -> bool:
                return answered() >= target
            await wait_for_async(enough_answered, WAIT_S,
                                 f"{ANSWERED_BETWEEN_RESTARTS} deposits answered before the next restart")
            assert not loading.done(), "every restart must land while deposits flow"
            assert await asyncio.to_thread(worker.stop) == 0
            await asyncio.to_thread(worker.start, False)
            await asyncio.to_thread(wait_for, all_owned, WAIT_S, "every partition owned again after a restart")
        await loading
        statuses = await asyncio.gather(*requests)
    failed = [s for s in statuses if s != 200]
    assert not failed, f"{len(failed)} of {len(statuses)} writes never got a 200: {sorted(set(failed))}"
    for wallet_id in wallets:
        def exact() -> bool:
            status, _, body = http_json(
                "GET", f"{base}/v1/wallets/{wallet_id}/balance?consistency=strong", key="test-read")
            return status == 200 and body["balance"] == f"{sent[wallet_id]}.00"
        wait_for(exact, WAIT_S, f"the balance of {wallet_id} to be exactly its deposits")
    web.stop()
    for worker in processors:
        worker.stop()
