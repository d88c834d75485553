"""Money stuck in transit, on the real stack: a transfer debited at its source whose credit leg never arrives
is reported by `wallet reconcile` (exit 1, the transfer named) once it is older than
`transfer_in_transit_max_s`, and the sinks role's gauge `wallet_transfer_in_transit_oldest_seconds` shows its
age. A settled transfer, and one in transit for less than the bound, are not reported; once the credit lands,
reconcile agrees again and the gauge drops to 0. Two transfers under one id (two source wallets on two
partitions) in transit are two: two rows, `wallet_transfers_in_transit` 2, two stuck transfers for reconcile.

The events are written straight to the module's own `wallet.events` (decided by the pure domain, so their
hash chains verify and they replay), as the processor would have written them had the destination's credit
leg been lost. A real sinks worker projects them into the module's own MySQL database and Redis database.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from dataclasses import replace

import pytest
from sqlalchemy import create_engine, text

from app import identity
from app.domain import commands as c
from app.domain import events as e
from app.domain.ledger import decide, evolve
from app.domain.state import WalletState
from app.kafka import partition_for
from wallet.reconcile import RESULT_FILE, reconcile
from app.settings import Settings
from tests.harness import Ledger, new_id, now_ms, wait_for, wait_for_async
from tests.integration.test_read_models import (drop_database, flush_redis, read_model_settings, sinks_worker,
                                                wallet_cli, wallet_on_partition)

REDIS_DB = 10  # this module's own Redis database (flushed at the start)
WAIT_S = 60
# The bound under test: far above the life of the "young" transfer in this test, far below the stuck one's age.
IN_TRANSIT_MAX_S = 1800
STUCK_AGE_S = 2 * 3600
GAUGE = "wallet_transfer_in_transit_oldest_seconds"
COUNT_GAUGE = "wallet_transfers_in_transit"


class EventLog:
    """Decides commands with the pure domain, keeps each wallet's state, and writes the applied events to the
    settings' events topic on their wallet's partition, as the processor does."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.states: dict[str, WalletState | None] = {}

    async def apply(self, command: c.CommandBase) -> e.EventBase:
        [event] = decide(self.states.get(command.wallet_id), command, command.timestamp_ms)
        assert e.is_applied(event), event
        self.states[command.wallet_id] = evolve(self.states.get(command.wallet_id), event)
        settings = self.ledger.settings
        await self.ledger.send_raw(event.wallet_id.encode(), self.ledger.events.encode(event),
                                   topic=settings.events_topic,
                                   partition=partition_for(event.wallet_id.encode(), settings.partitions))
        return event

    async def transfer(self, source: str, destination: str, amount_minor: int, at_ms: int,
                       transfer_id: str | None = None) -> str:
        """Debit `source` at `at_ms` (the debit's time); the transfer's id (a new one unless given)."""
        transfer_id = transfer_id or new_id("tr")
        await self.apply(c.Transfer(command_id=transfer_id, wallet_id=source, timestamp_ms=at_ms,
                                    destination_wallet_id=destination, amount_minor=amount_minor, currency="EUR"))
        return transfer_id

    async def credit(self, source: str, destination: str, transfer_id: str, amount_minor: int, debited_at_ms: int,
                     at_ms: int) -> None:
        """The credit leg the relay would publish for the debit of `debited_at_ms`, decided at `at_ms`."""
        await self.apply(c.TransferCredit(
            command_id=identity.credit_command_id(source, transfer_id, debited_at_ms), wallet_id=destination,
            timestamp_ms=at_ms, transfer_id=transfer_id, source_wallet_id=source, amount_minor=amount_minor,
            currency="EUR"))


@pytest.fixture(scope="module")
async def settings(stack):
    settings = replace(read_model_settings(stack, "transit", REDIS_DB), transfer_in_transit_max_s=IN_TRANSIT_MAX_S,
                       transfer_in_transit_poll_interval_s=0.2)
    await flush_redis(settings)
    sinks = sinks_worker(settings).start()
    yield replace(settings, sinks_web_port=sinks.settings.sinks_web_port)
    assert sinks.stop() == 0
    drop_database(settings)


def gauge(settings: Settings, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.sinks_web_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return None if found is None else float(found.group(1))


async def test_a_transfer_whose_credit_never_arrives_is_reported_by_reconcile_and_the_gauge(settings):
    alice, bob = new_id("alice"), new_id("bob")
    started_ms = now_ms()
    stuck_at_ms = started_ms - STUCK_AGE_S * 1000
    async with Ledger(settings) as ledger:
        log = EventLog(ledger)
        opened_at_ms = stuck_at_ms - 60_000
        for wallet_id in (alice, bob):
            await log.apply(c.OpenWallet(command_id=new_id("open"), wallet_id=wallet_id, timestamp_ms=opened_at_ms,
                                         owner_id="o", currency="EUR"))
        await log.apply(c.Deposit(command_id=new_id("dep"), wallet_id=alice, timestamp_ms=opened_at_ms + 1,
                                  amount_minor=10_000, currency="EUR"))
        settled = await log.transfer(alice, bob, 1_500, opened_at_ms + 2)  # older still, but credited
        await log.credit(alice, bob, settled, 1_500, opened_at_ms + 2, opened_at_ms + 3)
        stuck = await log.transfer(alice, bob, 2_500, stuck_at_ms)  # its credit never comes
        young = await log.transfer(alice, bob, 700, started_ms)  # in transit, within the bound

        stuck_line = (f"transfer {stuck}: in transit for (\\d+) s \\(transfer_in_transit_max_s is "
                      f"{IN_TRANSIT_MAX_S}\\): 2500 minor units of EUR debited from {alice}, neither credited to "
                      f"{bob} nor refunded")

        async def projected():
            """MySQL and Redis agree with the event log (whatever reconcile says of transfers in transit)."""
            report = await reconcile(settings, check_table=False)
            return all(line.startswith("transfer ") for line in report.differences)

        await wait_for_async(projected, WAIT_S, "the sinks to project the events", interval_s=0.5)
        done = wallet_cli(settings, "reconcile", "--no-table")
        assert done.returncode == 1, done.stdout + done.stderr
        [diff] = [line for line in done.stdout.splitlines() if line.startswith("DIFF")]
        age_s = int(re.fullmatch("DIFF " + stuck_line, diff).group(1))
        assert age_s >= STUCK_AGE_S
        assert settled not in done.stdout and young not in done.stdout
        assert json.loads((settings.state_dir / RESULT_FILE).read_text())["differences"] == 1

        def gauge_shows_the_stuck_age() -> bool:
            value = gauge(settings, GAUGE)
            # The age at the scrape: at least the stuck transfer's age when the test began, at most its age now.
            return value is not None and STUCK_AGE_S <= value <= time.time() - stuck_at_ms / 1000

        wait_for(gauge_shows_the_stuck_age, WAIT_S, f"{GAUGE} to show the stuck transfer's age", interval_s=0.3)
        assert gauge(settings, "wallet_reconcile_differences") == 1.0

        # The credit legs land at last: nothing is in transit, reconcile agrees, the gauge drops to 0.
        await log.credit(alice, bob, stuck, 2_500, stuck_at_ms, now_ms())
        await log.credit(alice, bob, young, 700, started_ms, now_ms())

    async def agrees():
        return not (await reconcile(settings, check_table=False)).differences

    await wait_for_async(agrees, WAIT_S, "reconcile to agree once the credits are projected", interval_s=0.5)
    wait_for(lambda: gauge(settings, GAUGE) == 0.0, WAIT_S, f"{GAUGE} to drop to 0", interval_s=0.3)
    done = wallet_cli(settings, "reconcile", "--no-table")
    assert done.returncode == 0, done.stdout + done.stderr


def pending_transfers(settings: Settings, transfer_id: str) -> set[tuple]:
    """The `transfers` rows of `transfer_id` still pending on the primary: (source, amount in minor units)."""
    engine = create_engine(settings.mysql_dsn.replace("+aiomysql", "+pymysql"))
    try:
        with engine.connect() as conn:
            return {tuple(row) for row in conn.execute(text(
                "SELECT source_wallet_id, amount_minor FROM transfers WHERE transfer_id = :t AND status = 'pending'"),
                {"t": transfer_id})}
    finally:
        engine.dispose()


async def test_two_transfers_in_transit_under_one_id_from_two_sources_are_two_for_the_gauges_and_reconcile(
        settings):
    # One id chosen by two producers for two source wallets on two partitions (ids are unique per partition).
    alice, carol = wallet_on_partition(0, settings.partitions), wallet_on_partition(1, settings.partitions)
    bob, transfer_id = new_id("bob"), new_id("tr-shared")
    alice_debited_ms = now_ms() - STUCK_AGE_S * 1000
    carol_debited_ms = alice_debited_ms + 60_000
    async with Ledger(settings) as ledger:
        log = EventLog(ledger)
        for wallet_id in (alice, carol, bob):
            await log.apply(c.OpenWallet(command_id=new_id("open"), wallet_id=wallet_id,
                                         timestamp_ms=alice_debited_ms - 60_000, owner_id="o", currency="EUR"))
        for wallet_id in (alice, carol):
            await log.apply(c.Deposit(command_id=new_id("dep"), wallet_id=wallet_id,
                                      timestamp_ms=alice_debited_ms - 1_000, amount_minor=10_000, currency="EUR"))
        await log.transfer(alice, bob, 1_500, alice_debited_ms, transfer_id)
        await log.transfer(carol, bob, 2_500, carol_debited_ms, transfer_id)

        wait_for(lambda: pending_transfers(settings, transfer_id) == {(alice, 1_500), (carol, 2_500)}, WAIT_S,
                 "both transfers to be pending rows of their own in MySQL", interval_s=0.3)
        wait_for(lambda: gauge(settings, COUNT_GAUGE) == 2.0, WAIT_S, f"{COUNT_GAUGE} to count both", interval_s=0.3)
        assert gauge(settings, GAUGE) >= STUCK_AGE_S  # alice's, the older

        done = wallet_cli(settings, "reconcile", "--no-table")
        assert done.returncode == 1, done.stdout + done.stderr
        diffs = [line for line in done.stdout.splitlines() if line.startswith("DIFF")]
        # Each transfer stuck on its own, and conservation holds: both amounts are counted in transit.
        assert len(diffs) == 2, diffs
        assert any(f"1500 minor units of EUR debited from {alice}" in line for line in diffs), diffs
        assert any(f"2500 minor units of EUR debited from {carol}" in line for line in diffs), diffs

        # Alice's credit lands: carol's transfer is still in transit, and it alone.
        await log.credit(alice, bob, transfer_id, 1_500, alice_debited_ms, now_ms())
        wait_for(lambda: pending_transfers(settings, transfer_id) == {(carol, 2_500)}, WAIT_S,
                 "alice's transfer to complete and carol's to stay pending", interval_s=0.3)
        wait_for(lambda: gauge(settings, COUNT_GAUGE) == 1.0, WAIT_S, f"{COUNT_GAUGE} to drop to 1", interval_s=0.3)
        # The oldest is now carol's, a minute younger than alice's (the same poll read the count and the oldest).
        assert STUCK_AGE_S - 60 <= gauge(settings, GAUGE) <= time.time() - carol_debited_ms / 1000

        await log.credit(carol, bob, transfer_id, 2_500, carol_debited_ms, now_ms())
    wait_for(lambda: gauge(settings, COUNT_GAUGE) == 0.0 and gauge(settings, GAUGE) == 0.0, WAIT_S,
             "nothing in transit once both credits are projected", interval_s=0.3)
    assert pending_transfers(settings, transfer_id) == set()
