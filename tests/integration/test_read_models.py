"""The read models on the real stack: reconcile, rebuild, balance at a time, and reads from the real replica.

The module has a MySQL database and a Redis database of its own (rebuild truncates and deletes), a
processor and the sinks as real worker processes, and the local stack's real GTID replica.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from readside.mysql import poll_replica_lag
from readside.redis import make_client, wallet_key
from readside import readmodel
from wallet import isolation
from app.domain import commands as c
from app.domain import events as e
from app.kafka import partition_for
from wallet.reconcile import reconcile
from app.settings import REPO_ROOT, Settings
from ops.local import stack as local_stack
from tests.conftest import prepare_topics
from tests.harness import Ledger, WorkerProcess, free_port, isolated_settings, new_id, now_ms, wait_for_async

WAIT_S = 60
REDIS_DB = 9  # this module's own Redis database (flushed at the start)


def read_model_settings(stack: Settings, name: str, redis_db: int) -> Settings:
    """Isolated topics plus a MySQL database (primary, seen through the replica) and Redis db of their own."""
    settings = isolation.with_database(prepare_topics(isolated_settings(stack, name)))
    return isolation.with_redis_database(settings, redis_db)


def sinks_worker(settings: Settings, **kwargs) -> WorkerProcess:
    """The sinks role in a process of its own (its own metrics port beside the processor's)."""
    return WorkerProcess(replace(settings, worker_web_port=free_port(), sinks_web_port=free_port()), ["sinks"], **kwargs)


def drop_database(settings: Settings) -> None:
    isolation.drop_database(settings)


async def flush_redis(settings: Settings) -> None:
    client = make_client(settings.redis_url)
    await client.flushdb()
    await client.aclose()


@pytest.fixture(scope="module")
async def settings(stack):
    settings = read_model_settings(stack, "rm", REDIS_DB)
    await flush_redis(settings)
    processor = WorkerProcess(settings, ["processor"]).start()
    sinks = sinks_worker(settings).start()
    yield settings
    assert sinks.stop() == 0
    assert processor.stop() == 0
    drop_database(settings)


@pytest.fixture
async def ledger(settings):
    async with Ledger(settings) as ledger:
        yield ledger


def wallet_on_partition(partition: int, partitions: int) -> str:
    while True:
        wallet_id = new_id("rm")
        if partition_for(wallet_id.encode(), partitions) == partition:
            return wallet_id


class Clock:
    """Command timestamps 10 ms apart, so every event has a time of its own (balance-at-a-time)."""

    def __init__(self) -> None:
        self.ms = now_ms()

    def __call__(self) -> int:
        self.ms += 10
        return self.ms


async def mixed_workload(ledger: Ledger) -> dict[str, str]:
    """Every movement kind over wallets on different partitions; returns the wallets by role."""
    partitions = ledger.settings.partitions
    w = {"payer": wallet_on_partition(0, partitions), "payee": wallet_on_partition(1, partitions),
         "frozen": wallet_on_partition(2, partitions), "closer": wallet_on_partition(3, partitions)}
    clock = Clock()

    def cmd(cls, wallet_id: str, **fields):
        return cls(command_id=new_id(cls.__name__), wallet_id=wallet_id, timestamp_ms=clock(), **fields)

    eur = {"currency": "EUR"}
    await ledger.send(*(cmd(c.OpenWallet, wid, owner_id="o", **eur) for wid in w.values()))
    await ledger.send(
        cmd(c.Deposit, w["payer"], amount_minor=50_000, **eur),
        cmd(c.Deposit, w["payee"], amount_minor=1_000, **eur),
        cmd(c.Withdraw, w["payer"], amount_minor=2_500, **eur),
        cmd(c.Withdraw, w["payee"], amount_minor=99_999, **eur),  # rejected: insufficient funds
        cmd(c.Transfer, w["payer"], destination_wallet_id=w["payee"], amount_minor=7_000, **eur),
        cmd(c.PlaceHold, w["payer"], hold_id="h1", amount_minor=3_000, expires_at_ms=clock() + 3_600_000, **eur),
        cmd(c.PlaceHold, w["payer"], hold_id="h2", amount_minor=1_000, expires_at_ms=clock() + 3_600_000, **eur),
        cmd(c.Freeze, w["frozen"], reason="test"),
        cmd(c.Close, w["closer"]),
    )
    await ledger.send(
        cmd(c.CaptureHold, w["payer"], hold_id="h1", amount_minor=2_000),
        cmd(c.ReleaseHold, w["payer"], hold_id="h2", reason="test"),
        cmd(c.Transfer, w["payer"], destination_wallet_id=w["frozen"], amount_minor=500, **eur),  # refunded
        cmd(c.Transfer, w["payee"], destination_wallet_id=w["payer"], amount_minor=300, **eur),
    )
    return w


async def settled(settings: Settings):
    """A reconcile report with no difference (every copy caught up), or None."""
    report = await reconcile(settings)
    return report if not report.differences else None


@pytest.fixture(scope="module")
async def workload(settings):
    async with Ledger(settings) as ledger:
        wallets = await mixed_workload(ledger)
    await wait_for_async(lambda: settled(settings), WAIT_S, "table, replay, MySQL and Redis to agree",
                         interval_s=0.5)
    return wallets


def wallet_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wallet.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **settings.to_env()}, cwd=REPO_ROOT)


async def test_reconcile_exits_zero_when_table_replay_mysql_and_redis_agree_after_a_mixed_workload(
        settings, workload):
    done = wallet_cli(settings, "reconcile")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "agree" in done.stdout
    kinds = {type(ev).__name__ for ev in await _events(settings)}
    assert {"Deposited", "Withdrawn", "TransferDebited", "TransferCredited", "TransferCreditRejected",
            "TransferRefunded", "HoldPlaced", "HoldCaptured", "HoldReleased", "WalletFrozen", "WalletClosed",
            "CommandRejected"} <= kinds


async def test_reconcile_reports_a_corrupted_mysql_row_and_a_corrupted_redis_hash_and_exits_non_zero(
        settings, workload):
    payer, payee = workload["payer"], workload["payee"]
    engine = create_async_engine(settings.mysql_dsn)
    redis = make_client(settings.redis_url)
    async with engine.connect() as conn:
        (transfer_id, debited_at_ms), = (await conn.execute(text(
            "SELECT transfer_id, debited_at_ms FROM transfers WHERE source_wallet_id = :w AND status = 'refunded'"),
            {"w": payer})).all()
    set_status = text("UPDATE transfers SET status = :s WHERE transfer_id = :t AND source_wallet_id = :w "
                      "AND debited_at_ms = :d")
    refunded = {"t": transfer_id, "w": payer, "d": debited_at_ms}
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE wallets SET balance_minor = balance_minor + 1 WHERE wallet_id = :w"),
                               {"w": payer})
            await conn.execute(set_status, {**refunded, "s": "pending"})
        await redis.hincrby(wallet_key(payee), "balance", 7)
        done = wallet_cli(settings, "reconcile")
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"DIFF {payer}: mysql balance_minor=" in done.stdout
        assert f"DIFF {payee}: redis balance_minor=" in done.stdout
        assert (f"DIFF mysql transfers: {transfer_id} from {payer} debited at {debited_at_ms} is pending but the "
                "event log says refunded") in done.stdout
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE wallets SET balance_minor = balance_minor - 1 WHERE wallet_id = :w"),
                               {"w": payer})
            await conn.execute(set_status, {**refunded, "s": "refunded"})
        await redis.hincrby(wallet_key(payee), "balance", -7)
        await redis.aclose()
        await engine.dispose()
    assert not (await reconcile(settings)).differences


async def _snapshot(settings: Settings) -> dict:
    engine = create_async_engine(settings.mysql_dsn)
    out: dict = {}
    try:
        async with engine.connect() as conn:
            for table in (readmodel.wallets, readmodel.ledger_entries, readmodel.transfers,
                          readmodel.command_outcomes):
                out[table.name] = sorted(tuple(row) for row in await conn.execute(select(table)))
    finally:
        await engine.dispose()
    redis = make_client(settings.redis_url)
    try:
        out["redis"] = {key: await redis.hgetall(key) async for key in redis.scan_iter(match="wallet:*")}
    finally:
        await redis.aclose()
    return out


async def test_rebuild_from_zero_equals_the_live_read_model(settings, workload):
    live = await _snapshot(settings)
    assert live["ledger_entries"] and live["redis"]
    done = wallet_cli(settings, "rebuild")
    assert done.returncode == 0, done.stdout + done.stderr
    events = len(await _events(settings))
    assert f"rebuild: {events:,} events" in done.stdout
    assert "100%" in done.stderr  # the progress bar reached its end
    assert await _snapshot(settings) == live


async def _events(settings: Settings) -> list[e.EventBase]:
    async with Ledger(settings) as ledger:
        return await ledger.read_all(settings.events_topic)


async def test_balance_at_a_time_is_right_after_every_movement_kind(settings, workload):
    applied = [ev for ev in await _events(settings) if e.is_applied(ev)]
    engine = create_async_engine(readmodel.read_dsn(settings))
    checked_kinds = set()
    try:
        async def replica_has_all() -> bool:
            async with engine.connect() as conn:
                count = (await conn.execute(text("SELECT COUNT(*) FROM ledger_entries"))).scalar()
            return count == len(applied)

        await wait_for_async(replica_has_all, WAIT_S, "the replica to apply every ledger entry")
        async with engine.connect() as conn:
            for wallet_id in set(workload.values()):
                stream = [ev for ev in applied if ev.wallet_id == wallet_id]
                first = stream[0]
                assert await readmodel.balance_at(conn, wallet_id, first.timestamp_ms - 1) is None
                for event in stream:
                    # The position at an event's time is that of the last event at or before it.
                    expected = [ev for ev in stream if ev.timestamp_ms <= event.timestamp_ms][-1]
                    found = await readmodel.balance_at(conn, wallet_id, event.timestamp_ms)
                    assert (found["balance_after_minor"], found["held_after_minor"], found["version"]) == (
                        expected.balance_after_minor, expected.held_after_minor, expected.version), event
                    checked_kinds.add(type(event).__name__)
    finally:
        await engine.dispose()
    assert {"Deposited", "Withdrawn", "TransferDebited", "TransferCredited", "TransferRefunded", "HoldPlaced",
            "HoldCaptured", "HoldReleased"} <= checked_kinds


async def test_reads_go_to_the_replica_which_serves_its_older_value_while_its_sql_thread_is_stopped(
        settings, workload, ledger):
    payee = workload["payee"]
    primary = create_async_engine(settings.mysql_dsn)
    reads = create_async_engine(readmodel.read_dsn(settings))
    assert readmodel.read_dsn(settings) == settings.mysql_replica_dsn
    try:
        async def position(engine) -> tuple[int, int]:
            async with engine.connect() as conn:
                found = await readmodel.balance_at(conn, payee, 2 ** 62)
            return found["balance_after_minor"], found["version"]

        before = await wait_for_async(lambda: _same(position, primary, reads), WAIT_S, "the replica to catch up")
        assert local_stack._replica_sql(settings, "STOP SLAVE SQL_THREAD") is not None
        try:
            assert await poll_replica_lag(reads) is None  # lag is unknown while replication is stopped
            await ledger.send(c.Deposit(command_id=new_id("dep"), wallet_id=payee, timestamp_ms=now_ms(),
                                        amount_minor=4_200, currency="EUR"))
            after = (before[0] + 4_200, before[1] + 1)

            async def primary_moved():
                return await position(primary) == after

            await wait_for_async(primary_moved, WAIT_S, "the sink to write the deposit on the primary")
            assert await position(reads) == before, "the read path must be the (stopped) replica"
        finally:
            assert local_stack._replica_sql(settings, "START SLAVE SQL_THREAD") is not None

        async def replica_moved():
            return await position(reads) == after

        await wait_for_async(replica_moved, WAIT_S, "the replica to apply the deposit")
        async def lag_known():
            lag = await poll_replica_lag(reads)
            return None if lag is None else (lag,)

        (lag,) = await wait_for_async(lag_known, WAIT_S, "the replica lag figure once replication runs")
        assert lag >= 0
    finally:
        await primary.dispose()
        await reads.dispose()
        await wait_for_async(lambda: settled(settings), WAIT_S, "every copy to agree again", interval_s=0.5)


async def _same(position, primary, reads):
    ours, theirs = await position(primary), await position(reads)
    return ours if ours == theirs else None
