"""A produced deposit shows up in the table, in wallet.events, in MySQL, in Redis and over HTTP,
with the same amount and version."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis
from sqlalchemy import create_engine, text

from readside.redis import wallet_key
from app.kafka import partition_for
from app.settings import REPO_ROOT
from tables.wallet_store import decode_state
from tests.conftest import prepare_topics
from tests.harness import Ledger, WorkerProcess, http_json, isolated_settings, new_id, store_path, wait_for


@pytest.fixture(scope="module")
def skeleton(stack):
    settings = prepare_topics(isolated_settings(stack, "skeleton"))
    worker = WorkerProcess(settings, ["all"]).start()
    yield settings, worker
    assert worker.stop() == 0, "worker should stop cleanly on SIGTERM"


def _produce(settings, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "wallet.cli", "produce", *args], cwd=REPO_ROOT, check=True,
                         capture_output=True, text=True, env={**os.environ, **settings.to_env()})
    return out.stdout


async def test_deposit_flows_through_every_component_with_one_amount_and_version(skeleton):
    settings, worker = skeleton
    wallet_id = new_id()
    _produce(settings, "OpenWallet", f"wallet_id={wallet_id}", "owner_id=alice", "currency=EUR")
    _produce(settings, "Deposit", f"wallet_id={wallet_id}", "amount=150.75", "currency=EUR")

    async with Ledger(settings) as ledger:
        async def events():
            return [e for e in await ledger.read_all(settings.events_topic) if e.wallet_id == wallet_id]

        from tests.harness import wait_for_async

        found = await wait_for_async(lambda: _two(events), 60, "two events of the wallet")
    opened, deposited = found
    assert type(deposited).__name__ == "Deposited"
    assert (deposited.amount_minor, deposited.balance_after_minor, deposited.version) == (15075, 15075, 2)

    status, _, body = wait_for(lambda: _balance_if_version(settings, wallet_id, 2), 30, "HTTP balance at version 2")
    assert body == {"wallet_id": wallet_id, "currency": "EUR", "status": "ACTIVE", "balance": "150.75",
                    "available": "150.75", "held": "0.00", "version": 2}

    hot = redis.Redis.from_url(settings.redis_url, decode_responses=True).hgetall(wallet_key(wallet_id))
    assert (hot["balance"], hot["version"], hot["currency"]) == ("15075", "2", "EUR")

    engine = create_engine(settings.mysql_dsn.replace("+aiomysql", "+pymysql"))
    with engine.connect() as conn:
        row = conn.execute(text("SELECT balance_minor, version FROM wallets WHERE wallet_id=:w"),
                           {"w": wallet_id}).one()
        entries = conn.execute(text("SELECT version, kind, amount_minor, balance_after_minor FROM ledger_entries "
                                    "WHERE wallet_id=:w ORDER BY version"), {"w": wallet_id}).all()
    engine.dispose()
    assert tuple(row) == (15075, 2)
    assert [tuple(r) for r in entries] == [(1, "WalletOpened", 0, 0), (2, "Deposited", 15075, 15075)]

    from tables.wallet_store import open_read_only

    db = open_read_only(store_path(settings, partition_for(wallet_id.encode(), settings.partitions)))
    try:
        table_state = decode_state(wallet_id, db[b"w/" + wallet_id.encode()])
    finally:
        db.close()
    assert (table_state.balance_minor, table_state.version) == (15075, 2)


async def _two(events):
    found = await events()
    return found if len(found) >= 2 else None


def _balance_if_version(settings, wallet_id, version):
    status, headers, body = http_json(
        "GET", f"http://127.0.0.1:{settings.http_port}/v1/wallets/{wallet_id}/balance", key="test-read")
    return (status, headers, body) if status == 200 and body.get("version") == version else None


def test_balance_needs_a_key_and_unknown_wallets_are_404(skeleton):
    settings, _ = skeleton
    base = f"http://127.0.0.1:{settings.http_port}/v1/wallets"
    status, headers, body = http_json("GET", f"{base}/nobody/balance")
    assert status == 401 and body["code"] == "UNAUTHORIZED" and headers["Content-Type"].startswith("application/problem+json")
    status, _, body = http_json("GET", f"{base}/nobody/balance", key="wrong-key")
    assert status == 401
    status, _, body = http_json("GET", f"{base}/{new_id()}/balance", key="test-read")
    assert status == 404 and body["code"] == "WALLET_NOT_FOUND"


def test_readyz_reports_every_dependency_and_the_replica_lag(skeleton):
    settings, _ = skeleton
    status, _, body = http_json("GET", f"http://127.0.0.1:{settings.http_port}/readyz")
    assert status == 200 and body["status"] == "ready"
    assert set(body["checks"]) == {"kafka", "mysql_primary", "mysql_replica", "redis"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["mysql_replica"]["lag_s"] >= 0


def test_readyz_is_503_and_names_the_store_when_redis_is_unreachable(stack):
    from tests.harness import free_port

    settings = prepare_topics(isolated_settings(stack, "readyz", redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    worker = WorkerProcess(settings, ["web"]).start()
    try:
        status, _, body = http_json("GET", f"http://127.0.0.1:{settings.http_port}/readyz")
    finally:
        worker.stop()
    assert status == 503 and body["status"] == "not ready"
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["kafka"]["ok"] and body["checks"]["mysql_primary"]["ok"]
