"""Money stuck in transit, on the real stack: a transfer debited at its source whose credit leg never arrives
is reported by `wallet reconcile` (exit 1, the transfer named) once it is older than
`transfer_in_transit_max_s`, and the sinks role's gauge `wallet_transfer_in_transit_oldest_seconds` shows its
age. A settled transfer, and one in transit for less than the bound, are not reported; once the credit lands,
reconcile agrees again and the gauge drops to 0.

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

from app.domain import commands as c
from app.domain import events as e
from app.domain.ledger import decide, evolve
from app.domain.state import WalletState
from app.kafka import partition_for
from wallet.reconcile import RESULT_FILE, reconcile
from app.settings import Settings
from tests.harness import Ledger, new_id, now_ms, wait_for, wait_for_async
from tests.integration.test_read_models import (drop_database, flush_redis, read_model_settings, sinks_worker,
                                                wallet_cli)

REDIS_DB = 10  # this module's own Redis database (flushed at the start)
WAIT_S = 60
# The bound under test: far above the life of the "young" transfer in this test, far below the stuck one's age.
IN_TRANSIT_MAX_S = 1800
STUCK_AGE_S = 2 * 3600
GAUGE = "wallet_transfer_in_transit_oldest_seconds"


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

    async def transfer(self, source: str, destination: str, amount_minor: int, at_ms: int) -> str:
        transfer_id = new_id("tr")
        await self.apply(c.Transfer(command_id=transfer_id, wallet_id=source, timestamp_ms=at_ms,
                                    destination_wallet_id=destination, amount_minor=amount_minor, currency="EUR"))
        return transfer_id

    async def credit(self, source: str, destination: str, transfer_id: str, amount_minor: int, at_ms: int) -> None:
        await self.apply(c.TransferCredit(command_id=new_id("credit"), wallet_id=destination, timestamp_ms=at_ms,
                                          transfer_id=transfer_id, source_wallet_id=source,
                                          amount_minor=amount_minor, currency="EUR"))


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
        await log.credit(alice, bob, settled, 1_500, opened_at_ms + 3)
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
        await log.credit(alice, bob, stuck, 2_500, now_ms())
        await log.credit(alice, bob, young, 700, now_ms())

    async def agrees():
        return not (await reconcile(settings, check_table=False)).differences

    await wait_for_async(agrees, WAIT_S, "reconcile to agree once the credits are projected", interval_s=0.5)
    wait_for(lambda: gauge(settings, GAUGE) == 0.0, WAIT_S, f"{GAUGE} to drop to 0", interval_s=0.3)
    done = wallet_cli(settings, "reconcile", "--no-table")
    assert done.returncode == 0, done.stdout + done.stderr
