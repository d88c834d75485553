"""Crash test: SIGKILL the processor several times while 20,000+ mixed commands flow.

Poison messages (2%) and producer resends (2%) flow with them. Afterwards, read with read_committed:
every command id has exactly one outcome; every poison message is in the DLQ exactly once; every
transfer leg is published exactly once; every transfer has
settled (credited, or refused and refunded) so nothing is stuck in transit; each wallet's table state
equals a replay of its events and its hash chain verifies; and money is conserved:
Σ balances + Σ in transit = Σ deposits − Σ withdrawals − Σ captures.

`CRASH_TEST_PROCESSING_GUARANTEE=at_least_once` runs the same test without Kafka transactions, to
show what they buy (docs/DESIGN.md reports that run); the default is the production setting.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter

from app.domain import commands as c
from app.domain import events as e
from bench.workloads import crash_mix
from tests.conftest import prepare_topics
from tests.harness import (WORKER_READY_TIMEOUT_S, Ledger, WorkerProcess, isolated_settings, read_topic, store_path,
                           wait_for, wait_for_async)
from tests.system.ledger_checks import (assert_exactly_once, assert_stores_equal_replay_and_money_is_conserved,
                                        in_transit)

COMMANDS = 24_000
WALLETS = 300
SEND_RATE_PER_S = 800  # slow enough that the kills land while commands flow
KILL_EVERY_S = 2.0
KILLS_MIN = 4
# Besides SIGKILLs from outside, each worker life kills itself after a random number of sends within
# this range, in the middle of a batch with part of its outputs already on the broker (the worst moment).
FAILPOINT_SENDS = (1_500, 4_000)
DUPLICATE_RESEND_RATIO = 0.02
POISON_RATIO = 0.02
SEED = 7


def build_commands(rng: random.Random) -> tuple[list[str], list[c.CommandBase]]:
    return crash_mix(rng, COMMANDS, WALLETS, "cr")


async def _send_at_rate(ledger: Ledger, commands: list[c.CommandBase], rng: random.Random) -> list[bytes]:
    """Send at SEND_RATE_PER_S with some resends and some poison; return the poison values sent."""
    chunk = max(1, SEND_RATE_PER_S // 20)
    started = time.monotonic()
    poison: list[bytes] = []
    for start in range(0, len(commands), chunk):
        part = commands[start:start + chunk]
        # Retries by a producer: some commands are sent again with the same id.
        part += [cmd for cmd in part if rng.random() < DUPLICATE_RESEND_RATIO]
        await ledger.send(*part)
        for cmd in part:
            if rng.random() < POISON_RATIO:
                value = b"\x07poison-%d" % len(poison)
                poison.append(value)
                await ledger.send_raw(cmd.wallet_id.encode(), value)
        due = started + (start + chunk) / SEND_RATE_PER_S
        await asyncio.sleep(max(0.0, due - time.monotonic()))
    return poison


SETTLE_TIMEOUT_S = 30


_in_transit = in_transit


async def _poll(condition, timeout_s: float):
    """The condition's value once truthy, or None at the deadline (the caller asserts what is wrong)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await condition()
        if value:
            return value
        await asyncio.sleep(1.0)
    return None


async def test_sigkill_during_load_loses_nothing_and_duplicates_nothing(stack):
    guarantee = os.environ.get("CRASH_TEST_PROCESSING_GUARANTEE", "exactly_once")
    # A restarted worker takes its place in the group at once (static membership), as a pod of a stateful set.
    settings = prepare_topics(isolated_settings(stack, "crash", processing_guarantee=guarantee,
                                                processor_static_membership=True))
    rng = random.Random(SEED)
    wallets, commands = build_commands(rng)
    worker = WorkerProcess(settings, ["processor"])

    def restart(failpoint: bool) -> None:
        sends = rng.randint(*FAILPOINT_SENDS) if failpoint else 0
        worker.extra_env = {"WALLET_FAULT_KILL_AFTER_SENDS": str(sends)}
        # A worker with the failpoint may die before it reports ready: each partition decides as soon as its
        # own store is caught up (agents/handover.py), not once every partition's is.
        worker.start(wait_ready=not failpoint)
        if failpoint:
            wait_for(lambda: worker.reported_ready() or not worker.alive(), WORKER_READY_TIMEOUT_S,
                     "the worker to report ready or die at its failpoint", interval_s=0.2)

    restart(failpoint=True)
    sigkills = failpoint_kills = 0
    async with Ledger(settings) as ledger:
        sending = asyncio.create_task(_send_at_rate(ledger, commands, rng))
        while not sending.done():
            await asyncio.wait([sending], timeout=KILL_EVERY_S)
            if worker.alive():
                worker.kill()
                sigkills += 1
            else:
                failpoint_kills += 1
            await asyncio.to_thread(restart, True)
        poison = await sending
        # One more crash, then a worker without the failpoint drains what is left.
        worker.kill()
        sigkills += 1
        await asyncio.to_thread(restart, False)
        assert sigkills + failpoint_kills >= KILLS_MIN, "too few crashes landed while commands flowed"
        assert failpoint_kills >= 1, "no worker died at the mid-batch failpoint"

        sent_ids = {cmd.command_id for cmd in commands}

        async def all_decided():
            events = await ledger.read_all(settings.events_topic)
            return events if sent_ids <= {ev.command_id for ev in events} else None

        await wait_for_async(all_decided, 180, "an outcome for every command", 1.0)

        async def settled():
            events = await ledger.read_all(settings.events_topic)
            return events if not _in_transit(events) else None

        # Legs are produced with their debits, so settling takes a few batches, not minutes. After the
        # deadline the assertions below say what is stuck instead of a bare timeout.
        events = await _poll(settled, SETTLE_TIMEOUT_S) or await ledger.read_all(settings.events_topic)
        dlq = await read_topic(settings, settings.dlq_topic)
        legs = await read_topic(settings, settings.transfer_legs_topic)
    assert worker.stop() == 0

    leg_ids = Counter(ledger.legs.decode(record.value).command_id for record in legs)
    assert_exactly_once(events, sent_ids, dlq, poison, leg_ids)
    assert_stores_equal_replay_and_money_is_conserved(
        events, [store_path(settings, partition) for partition in range(settings.partitions)])
    assert sum(1 for ev in events if isinstance(ev, e.TransferRefunded)) > 0, "the load must exercise refunds"
