"""The sinks under store outages and kills, on the real stack.

- MariaDB stopped for 30 s while commands flow: the processor keeps deciding, the MySQL sink retries
  holding its position, and afterwards `ledger_entries` and `command_outcomes` equal `wallet.events`.
- Redis stopped for 30 s: the same for the Redis hashes.
- The sinks process SIGKILLed: once by a failpoint right after a store commit and before the offset commit
  (the at-least-once window), once at a random moment; every restart leaves no gap and no duplicate.

The module runs a MariaDB and a Redis of its own, started and stopped by the stack's own `up`/`down` on
free ports under the module's state directory: stopping the shared ones would pull the read models from
under any other test session using the stack at the same time (and make that session their owner).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
from dataclasses import replace

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from readside.redis import make_client, wallet_key
from wallet import bootstrap
from app.domain import commands as c
from app.domain import events as e
from app.domain.ledger import replay
from ops.local import stack as local_stack
from tests.conftest import prepare_topics
from tests.harness import Ledger, WorkerProcess, free_port, isolated_settings, new_id, now_ms, wait_for_async
from tests.integration.test_read_models import sinks_worker

STORES = ["mariadb", "redis"]  # this module's private ones
OUTAGE_S = 30
CATCH_UP_S = 60
WALLETS = 8
RATE_PER_S = 40


@pytest.fixture(scope="module")
async def settings(stack):
    settings = isolated_settings(stack, "sf")
    mysql_port, redis_port = free_port(), free_port()
    settings = replace(
        settings, mysql_dsn=f"mysql+aiomysql://wallet:wallet@127.0.0.1:{mysql_port}/wallet", mysql_replica_dsn="",
        mysql_replica_port=0, redis_url=f"redis://127.0.0.1:{redis_port}/0",
        # Short backoff cap: the sink notices a store that is back within a second.
        sink_retry_backoff_max_s=1.0)
    await asyncio.to_thread(local_stack.up, settings, STORES)
    try:
        bootstrap.migrate(settings)
        yield prepare_topics(settings)
    finally:
        await asyncio.to_thread(local_stack.down, settings, STORES)
        for store in STORES:
            shutil.rmtree(settings.state_dir / store, ignore_errors=True)


@pytest.fixture(scope="module")
async def processor(settings):
    worker = WorkerProcess(settings, ["processor"]).start()
    yield worker
    assert worker.stop() == 0


@pytest.fixture(scope="module")
async def wallets(settings, processor):
    ids = [new_id("sf") for _ in range(WALLETS)]
    async with Ledger(settings) as ledger:
        await ledger.send(*(c.OpenWallet(command_id=new_id("open"), wallet_id=w, timestamp_ms=now_ms(),
                                         owner_id="o", currency="EUR") for w in ids))
    return ids


class Flow:
    """Deposits, withdrawals and transfers at a steady rate until stopped (a bounded background task)."""

    def __init__(self, ledger: Ledger, wallet_ids: list[str]) -> None:
        self.ledger, self.wallet_ids, self.sent = ledger, wallet_ids, 0
        self._task: asyncio.Task | None = None
        self._rng = random.Random(5)

    async def _run(self) -> None:
        while True:
            wallet_id = self._rng.choice(self.wallet_ids)
            roll = self._rng.random()
            common = dict(command_id=new_id("f"), wallet_id=wallet_id, timestamp_ms=now_ms(), currency="EUR")
            if roll < 0.5:
                cmd = c.Deposit(amount_minor=self._rng.randint(100, 5_000), **common)
            elif roll < 0.75:
                cmd = c.Withdraw(amount_minor=self._rng.randint(1, 2_000), **common)
            else:
                cmd = c.Transfer(amount_minor=self._rng.randint(1, 1_000),
                                 destination_wallet_id=self._rng.choice(self.wallet_ids), **common)
            await self.ledger.send(cmd)
            self.sent += 1
            await asyncio.sleep(1 / RATE_PER_S)

    async def sent_more(self, count: int) -> None:
        """Return once `count` more commands than now were sent (bounded: CATCH_UP_S)."""
        target = self.sent + count

        async def reached() -> bool:
            return self.sent >= target
        await wait_for_async(reached, CATCH_UP_S, f"{count} more commands to be sent")

    def __enter__(self) -> "Flow":
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc) -> None:
        self._task.cancel()

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._task.done() and not self._task.cancelled() and self._task.exception():
            raise self._task.exception()


async def events_now(settings) -> list[e.EventBase]:
    async with Ledger(settings) as ledger:
        return await ledger.read_all(settings.events_topic)


async def mysql_matches_the_log(settings) -> bool:
    """ledger_entries == applied events by (wallet_id, version, hash), outcomes == every event: no gap,
    no duplicate (a duplicate would be a second row, which the keys forbid, or a count above the log's)."""
    events = await events_now(settings)
    expected = sorted((ev.wallet_id, ev.version, ev.hash) for ev in events if e.is_applied(ev))
    engine = create_async_engine(settings.mysql_dsn)
    try:
        async with engine.connect() as conn:
            entries = sorted(tuple(row) for row in await conn.execute(
                text("SELECT wallet_id, version, hash FROM ledger_entries")))
            outcomes = (await conn.execute(text("SELECT COUNT(*) FROM command_outcomes"))).scalar()
    finally:
        await engine.dispose()
    return entries == expected and outcomes == len(events)


async def redis_matches_the_log(settings) -> bool:
    states = replay(await events_now(settings))
    client = make_client(settings.redis_url)
    try:
        for wallet_id, state in states.items():
            found = await client.hgetall(wallet_key(wallet_id))
            if (found.get("version"), found.get("balance"), found.get("held")) != (
                    str(state.version), str(state.balance_minor), str(state.held_minor)):
                return False
    finally:
        await client.aclose()
    return True


async def _outage(settings, service: str, sinks: WorkerProcess, flow: Flow) -> None:
    """Stop `service` (this module's own) for OUTAGE_S while `flow` runs; the processor must keep going."""
    assert local_stack._pid(settings, service) is not None
    before = len(await events_now(settings))
    await asyncio.to_thread(local_stack.down, settings, [service])
    try:
        await asyncio.sleep(OUTAGE_S)  # the outage itself is the point of the test, not a wait for a state
        during = len(await events_now(settings))
        assert during > before + OUTAGE_S * RATE_PER_S // 4, "the processor stalled while the store was down"
        assert sinks.alive(), "a store outage must not crash the sinks"
        assert any("store write failed; retrying" in line for line in sinks.log_lines())
    finally:
        await asyncio.to_thread(local_stack.up, settings, [service])


async def test_mariadb_stopped_30_s_while_commands_flow_then_the_sink_catches_up_without_loss_or_double(
        settings, processor, wallets):
    sinks = sinks_worker(settings).start()
    try:
        async with Ledger(settings) as ledger:
            with Flow(ledger, wallets) as flow:
                await wait_for_async(lambda: mysql_matches_the_log(settings), CATCH_UP_S, "the first events in MySQL")
                await _outage(settings, "mariadb", sinks, flow)
                await flow.sent_more(RATE_PER_S)  # more commands after the restart
                await flow.stop()
        await wait_for_async(lambda: mysql_matches_the_log(settings), CATCH_UP_S,
                             "MySQL to equal the event log after the outage", interval_s=0.5)
        assert sinks.alive()
    finally:
        assert sinks.stop() == 0


async def test_redis_stopped_30_s_while_commands_flow_then_the_sink_catches_up_without_loss(
        settings, processor, wallets):
    sinks = sinks_worker(settings).start()
    try:
        async with Ledger(settings) as ledger:
            with Flow(ledger, wallets) as flow:
                await wait_for_async(lambda: redis_matches_the_log(settings), CATCH_UP_S, "Redis to be current")
                await _outage(settings, "redis", sinks, flow)
                await flow.sent_more(RATE_PER_S)  # more commands after the restart
                await flow.stop()
        await wait_for_async(lambda: redis_matches_the_log(settings), CATCH_UP_S,
                             "Redis to equal a replay of the log after the outage", interval_s=0.5)
        await wait_for_async(lambda: mysql_matches_the_log(settings), CATCH_UP_S, "MySQL to stay exact")
    finally:
        assert sinks.stop() == 0


async def test_sinks_killed_mid_batch_and_restarted_leave_no_gap_and_no_duplicate(settings, processor, wallets):
    killed_by_failpoint = sinks_worker(settings, extra_env={"WALLET_FAULT_SINK_KILL_AFTER_WRITES": "3"})
    async with Ledger(settings) as ledger:
        with Flow(ledger, wallets) as flow:
            killed_by_failpoint.start(wait_ready=False)
            # Store committed, offsets not: the restarted sink re-writes those batches idempotently.
            async def fired() -> bool:
                return killed_by_failpoint.proc.poll() is not None

            # Asynchronously: the flow of commands runs on this event loop meanwhile.
            await wait_for_async(fired, CATCH_UP_S, "the failpoint to fire")
            assert killed_by_failpoint.proc.returncode == -9
            for _ in range(2):
                sinks = sinks_worker(settings).start()
                await asyncio.sleep(random.uniform(1.0, 3.0))  # a random moment under load
                sinks.kill()
            await flow.stop()
    sinks = sinks_worker(settings).start()
    try:
        await wait_for_async(lambda: mysql_matches_the_log(settings), CATCH_UP_S,
                             "MySQL to equal the event log after the kills", interval_s=0.5)
        await wait_for_async(lambda: redis_matches_the_log(settings), CATCH_UP_S, "Redis to equal a replay")
    finally:
        assert sinks.stop() == 0
