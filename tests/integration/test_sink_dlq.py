"""One row the read model refuses does not stop the ledger (real Kafka, registry, MariaDB, Redis).

The module's own database refuses two events: its `wallets.owner_id` is narrowed so that one wallet's owner
does not fit (a DataError, which used to crash the worker, processor included, in a loop), and a CHECK
constraint refuses one ledger entry (reference `refuse-me`; under INSERT IGNORE that row was dropped without
a word). A worker runs the processor and the sinks in one process, as `make run` and compose used to (the
strongest case: a sink that crashed would take the processor with it). Then:
- each refused event lands in the sink DLQ with the sink's name, the store's reason and where it was read from;
- every other event's rows are written, before and after it;
- the processor keeps deciding: commands sent after the refusal get their outcomes on wallet.events, and
  the sink writes them too;
- the worker never exits (no crash, so no crash-loop), the metric counts the event, `wallet dlq list --sink`
  lists it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.domain import commands as c
from app.domain import events as e
from app.settings import REPO_ROOT
from tests.conftest import prepare_topics
from tests.harness import Ledger, WorkerProcess, isolated_settings, new_id, now_ms, read_topic, wait_for_async
from wallet import isolation

WAIT_S = 90
CLI_TIMEOUT_S = 90
REFUSED_REFERENCE = "refuse-me"
OWNER_ID_CHARS_MAX = 16  # the narrowed column
LONG_OWNER = "an-owner-id-longer-than-the-column"


@pytest.fixture(scope="module")
async def settings(stack):
    settings = isolation.with_database(prepare_topics(isolated_settings(stack, "sdlq")))
    settings = isolation.claim_redis_database(settings)
    engine = create_async_engine(settings.mysql_dsn)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"ALTER TABLE ledger_entries ADD CONSTRAINT refuse_one_reference "
                                    f"CHECK (reference <> '{REFUSED_REFERENCE}')"))
            await conn.execute(text(f"ALTER TABLE wallets MODIFY owner_id VARCHAR({OWNER_ID_CHARS_MAX}) "
                                    f"NOT NULL DEFAULT ''"))
    finally:
        await engine.dispose()
    yield settings
    isolation.discard(settings, database=True, redis_claimed=True)


@pytest.fixture(scope="module")
async def worker(settings):
    worker = WorkerProcess(settings, ["processor", "sinks"]).start()
    yield worker
    assert worker.stop() == 0


async def _ledger_rows(settings) -> set[tuple[str, int]]:
    engine = create_async_engine(settings.mysql_dsn)
    try:
        async with engine.connect() as conn:
            return {tuple(row) for row in await conn.execute(text("SELECT wallet_id, version FROM ledger_entries"))}
    finally:
        await engine.dispose()


def _sink_dlq_metric(settings, sink: str, reason: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.worker_web_port}/metrics", timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    wanted = f'wallet_sink_dlq_events_total{{reason="{reason}",sink="{sink}"}} '
    return sum(float(line.split()[-1]) for line in lines if line.startswith(wanted))


async def test_events_the_store_refuses_go_to_the_sink_dlq_and_the_ledger_goes_on(settings, worker) -> None:
    alice, bob, carol = new_id("alice"), new_id("bob"), new_id("carol")
    refused_id, carol_open_id = new_id("refused"), new_id("open")

    def cmd(cls, wallet_id: str, **fields):
        return cls(command_id=fields.pop("command_id", None) or new_id(cls.__name__), wallet_id=wallet_id,
                   timestamp_ms=now_ms(), **fields)

    eur = {"currency": "EUR"}
    async with Ledger(settings) as ledger:
        await ledger.send(cmd(c.OpenWallet, alice, owner_id="a", **eur), cmd(c.OpenWallet, bob, owner_id="b", **eur),
                          cmd(c.OpenWallet, carol, owner_id=LONG_OWNER, command_id=carol_open_id, **eur))
        await ledger.send(
            cmd(c.Deposit, alice, amount_minor=1_000, reference="before", **eur),
            cmd(c.Deposit, alice, amount_minor=50, reference=REFUSED_REFERENCE, command_id=refused_id, **eur),
            cmd(c.Deposit, bob, amount_minor=700, reference="beside", **eur),
            cmd(c.Deposit, carol, amount_minor=300, **eur),
            cmd(c.Deposit, alice, amount_minor=1, reference="after", **eur))

        async def dead_letters():
            letters = await read_topic(settings, settings.sink_dlq_topic)
            return letters if len(letters) >= 2 else None

        letters = await wait_for_async(dead_letters, WAIT_S, "the two refused events in the sink DLQ")
        by_command = {}
        for letter in letters:
            headers = {name: value.decode() for name, value in letter.headers}
            event = ledger.events.decode(letter.value)
            by_command[event.command_id] = (type(event), headers["sink"], headers["error.code"], letter.key)
            assert headers["source.topic"] == settings.events_topic
            source = [record for record in await read_topic(settings, settings.events_topic)
                      if record.offset == int(headers["source.offset"])
                      and record.partition == int(headers["source.partition"])]
            assert [record.value for record in source] == [letter.value]
            assert ("refuse_one_reference" if event.command_id == refused_id else "owner_id") in headers["error.detail"]
        assert by_command == {
            refused_id: (e.Deposited, "mysql", "OperationalError", alice.encode()),
            carol_open_id: (e.WalletOpened, "mysql", "DataError", carol.encode()),
        }

        # After the refusal the processor still decides, and the sink still writes.
        late = cmd(c.Withdraw, bob, amount_minor=200, **eur)
        await ledger.send(late)

        async def late_outcome():
            return [ev for ev in await ledger.read_all(settings.events_topic) if ev.command_id == late.command_id]

        (outcome,) = await wait_for_async(late_outcome, WAIT_S, "the outcome of a command sent after the refusal")
        assert isinstance(outcome, e.Withdrawn)
        applied = {(ev.wallet_id, ev.version) for ev in await ledger.read_all(settings.events_topic)
                   if e.is_applied(ev) and ev.command_id not in (refused_id, carol_open_id)}

        async def everything_else_written():
            return await _ledger_rows(settings) == applied

        await wait_for_async(everything_else_written, WAIT_S, "every other event's ledger entry in MySQL")

    assert worker.alive() and worker.starts == 1, "the worker exited"
    assert not any("worker role failed" in line for line in worker.log_lines())
    assert any("the store refused an event; it went to the sink DLQ" in line for line in worker.log_lines())
    assert _sink_dlq_metric(settings, "mysql", "OperationalError") == 1
    assert _sink_dlq_metric(settings, "mysql", "DataError") == 1
    assert _sink_dlq_metric(settings, "redis", "ResponseError") == 0

    listed = subprocess.run([sys.executable, "-m", "wallet.cli", "dlq", "list", "--sink"], capture_output=True,
                            text=True, cwd=REPO_ROOT, env={**os.environ, **settings.to_env()}, timeout=CLI_TIMEOUT_S)
    assert listed.returncode == 0, listed.stderr
    assert "OperationalError" in listed.stdout and "sink=mysql" in listed.stdout and f"key={alice}" in listed.stdout
    assert f"2 message(s) in {settings.sink_dlq_topic}" in listed.stdout
