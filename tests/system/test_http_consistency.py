"""The HTTP API under concurrency and store faults: no lost or doubled money, read-your-writes, and
balance reads that keep answering when Redis is gone (from the owning table, then MySQL)."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import uuid
from dataclasses import replace

import aiohttp
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import prepare_topics
from tests.harness import WorkerProcess, free_port, http_json, isolated_settings, new_id, wait_for

WRITE_KEY = {"Authorization": "Bearer test-write"}


@pytest.fixture(scope="module")
def service(stack):
    settings = prepare_topics(isolated_settings(stack, "http-consistency", rate_limit_per_s=100_000,
                                                rate_limit_burst=100_000))
    worker = WorkerProcess(settings, ["all"]).start()
    yield settings
    assert worker.stop() == 0


def _base(settings) -> str:
    return f"http://{settings.http_host}:{settings.http_port}"


def _open(settings, currency: str = "EUR") -> str:
    wallet_id = new_id()
    status, _, body = http_json("POST", _base(settings) + "/v1/wallets", key="test-write",
                                body={"wallet_id": wallet_id, "owner_id": "o", "currency": currency})
    assert status == 201, body
    return wallet_id


async def _deposit(session: aiohttp.ClientSession, settings, wallet_id: str, amount: str, key: str) -> tuple[int, dict]:
    async with session.post(f"{_base(settings)}/v1/wallets/{wallet_id}/deposits", json={"amount": amount},
                            headers={**WRITE_KEY, "Idempotency-Key": key}) as response:
        return response.status, await response.json(content_type=None)


async def test_200_concurrent_deposits_of_one_euro_add_exactly_200_euros_even_with_retried_keys(service):
    settings = service
    wallet_id = _open(settings)
    keys = [f"dep-{uuid.uuid4().hex}" for _ in range(200)]
    retried = random.Random(7).sample(keys, 50)  # the same request sent twice, concurrently with itself
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=250)) as session:
        results = await asyncio.gather(*(_deposit(session, settings, wallet_id, "1.00", key)
                                         for key in keys + retried))
    statuses = [status for status, _ in results]
    assert statuses.count(200) == 250, sorted(set(statuses))
    first = {body["command_id"]: body for _, body in results[:200]}
    for (_, again) in results[200:]:
        assert again == first[again["command_id"]], "a retry must get the first response"
    versions = sorted(body["version"] for body in first.values())
    assert versions == list(range(2, 202)), "each deposit applied once, one version each"

    status, _, strong = http_json("GET", f"{_base(settings)}/v1/wallets/{wallet_id}/balance?consistency=strong",
                                  key="test-write")
    assert (status, strong["balance"], strong["version"]) == (200, "200.00", 201)
    _, _, eventual = wait_for(lambda: _balance_at_version(settings, wallet_id, 201), 30, "Redis at version 201")
    assert eventual["balance"] == "200.00"
    engine = create_engine(settings.mysql_dsn.replace("+aiomysql", "+pymysql"))
    try:
        def mysql_sum():
            with engine.connect() as conn:
                return conn.execute(text("SELECT COUNT(*), SUM(amount_minor) FROM ledger_entries "
                                         "WHERE wallet_id=:w AND kind='Deposited'"), {"w": wallet_id}).one()
        count, total = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(mysql_sum()), 30, "200 entries")
    finally:
        engine.dispose()
    assert (count, total) == (200, 20_000)


def _balance_at_version(settings, wallet_id: str, version: int, **params: str):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    found = http_json("GET", f"{_base(settings)}/v1/wallets/{wallet_id}/balance?{query}", key="test-write")
    return found if found[0] == 200 and found[2]["version"] == version else None


async def test_a_read_with_the_version_a_write_returned_never_shows_an_older_state(service):
    settings = service
    wallet_id = _open(settings)
    async with aiohttp.ClientSession() as session:
        for n in range(1, 61):
            status, written = await _deposit(session, settings, wallet_id, "0.10", uuid.uuid4().hex)
            assert status == 200
            for path in ("/balance", ""):
                async with session.get(f"{_base(settings)}/v1/wallets/{wallet_id}{path}",
                                       params={"min_version": str(written["version"])}, headers=WRITE_KEY) as resp:
                    read = await resp.json()
                assert resp.status == 200
                assert read["version"] >= written["version"], (n, path, read, written)
                if read["version"] == written["version"]:
                    assert read["balance"] == written["balance"]


def _private_redis() -> tuple[subprocess.Popen, int]:
    """A Redis of this test's own (the shared one serves other tests), on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    import redis

    wait_for(lambda: _pings(redis, port), 10, "private redis to answer")
    return proc, port


def _pings(redis, port: int) -> bool:
    try:
        return redis.Redis(port=port, socket_timeout=0.5).ping()
    except redis.exceptions.RedisError:
        return False


def test_balance_reads_answer_from_the_table_and_then_mysql_when_redis_is_gone(stack):
    proc, port = _private_redis()
    settings = prepare_topics(isolated_settings(stack, "http-redis-down", redis_url=f"redis://127.0.0.1:{port}/0"))
    worker = WorkerProcess(settings, ["all"]).start()
    # A second API process that finds no processor group (another app id): with Redis gone it must read MySQL.
    mysql_only = replace(settings, http_port=free_port(), worker_web_port=free_port(),
                         app_id=f"{settings.app_id}-no-group", web_instance=1)
    web_only = None
    try:
        wallet_id = _open(settings)
        status, _, deposited = http_json("POST", f"{_base(settings)}/v1/wallets/{wallet_id}/deposits",
                                         key="test-write", body={"amount": "42.00"})
        assert status == 200
        wait_for(lambda: _balance_at_version(settings, wallet_id, 2), 30, "Redis to have version 2")
        web_only = WorkerProcess(mysql_only, ["web"]).start()

        proc.kill()
        proc.wait(10)
        assert not _pings(__import__("redis"), port)

        status, _, body = http_json("GET", f"{_base(settings)}/v1/wallets/{wallet_id}/balance", key="test-write")
        assert (status, body["balance"], body["version"]) == (200, "42.00", 2)
        # Writes go on without Redis (the rate limit fails open) and reads see them, from the table.
        status, _, more = http_json("POST", f"{_base(settings)}/v1/wallets/{wallet_id}/deposits",
                                    key="test-write", body={"amount": "8.00"})
        assert (status, more["balance"], more["version"]) == (200, "50.00", 3)
        status, _, body = http_json("GET", f"{_base(settings)}/v1/wallets/{wallet_id}", key="test-write")
        assert (status, body["balance"], body["version"]) == (200, "50.00", 3)

        # No Redis and no table: the primary MySQL answers once the sink has written version 3.
        status, _, body = wait_for(lambda: _balance_at_version(mysql_only, wallet_id, 3), 30, "MySQL at version 3")
        assert (body["balance"], body["available"]) == ("50.00", "50.00")
        status, _, body = http_json("GET", f"{_base(mysql_only)}/v1/wallets/{new_id()}/balance", key="test-write")
        assert (status, body["code"]) == (404, "WALLET_NOT_FOUND")
    finally:
        if web_only is not None:
            web_only.stop()
        worker.stop()
        if proc.poll() is None:
            proc.kill()
