"""Elastic processing under load: three processor workers, then a fourth, a SIGTERM, a SIGKILL and a SIGSTOP.

30,000 mixed commands (transfers across partitions, holds, producer resends, poison) flow at 800/s while the
group changes under them. Afterwards, read with read_committed: every command has exactly one outcome, each
poison message is in the DLQ once, each transfer leg is published once, no transfer is left in transit, each
partition's freshest store equals a replay of the events, every hash chain verifies and money is conserved.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter

from bench.workloads import crash_mix
from tables.wallet_store import open_read_only
from tests.conftest import prepare_topics
from tests.harness import Ledger, WorkerProcess, isolated_settings, read_topic, wait_for_async
from tests.integration.test_elastic_processing import owned
from tests.system import test_crash_exactly_once as crash
from tests.system.ledger_checks import assert_exactly_once, assert_stores_equal_replay_and_money_is_conserved

COMMANDS = 30_000
SEED = 11
WORKERS = 3
# Beyond the session timeout, how long the group may take to give a paused worker's partitions away.
ZOMBIE_TAKEOVER_S = 60


def _freshest_stores(settings) -> list:
    """For each partition, the store copy (owner or standby, any worker) reflecting the most events."""
    root = settings.state_dir / "processor"
    chosen = []
    for partition in range(settings.partitions):
        best, best_offset = None, -1
        for path in root.glob(f"*/p{partition}"):
            db = open_read_only(path)
            try:
                offset = int(db.get(b"m/events_offset") or b"0")
            finally:
                db.close()
            if offset > best_offset:
                best, best_offset = path, offset
        assert best is not None, f"no store of partition {partition}"
        chosen.append(best)
    return chosen


async def test_workers_joining_leaving_dying_and_pausing_under_load_lose_and_double_nothing(stack):
    settings = prepare_topics(isolated_settings(stack, "elastic-sys", processor_standby_replicas=1))
    rng = random.Random(SEED)
    wallets, commands = crash_mix(rng, COMMANDS, crash.WALLETS, "cr")  # the crash test's mix, 30,000 of it
    workers = [WorkerProcess(settings, ["processor"], instance=i) for i in range(WORKERS + 1)]
    for worker in workers[:WORKERS]:
        worker.start(wait_ready=False)
    for worker in workers[:WORKERS]:
        worker.wait_ready()
    steps: list[str] = []
    session_s = settings.processor_session_timeout_ms / 1000
    async with Ledger(settings) as ledger:
        sending = asyncio.create_task(crash._send_at_rate(ledger, commands, rng))
        started = time.monotonic()

        async def at(offset_s: float) -> None:
            await asyncio.sleep(max(0.0, started + offset_s - time.monotonic()))
            assert not sending.done(), "the group changes must land while commands flow"

        await at(4)
        workers[3].start(wait_ready=False)  # scale out
        steps.append("4th worker started")
        await at(10)
        assert workers[0].stop() == 0  # scale in, gracefully
        steps.append("worker 0 SIGTERMed")
        await at(16)
        workers[1].kill()  # a crash: its partitions move after its session times out
        steps.append("worker 1 SIGKILLed")
        await at(20)
        os.kill(workers[2].proc.pid, signal.SIGSTOP)  # a zombie: paused past its session
        steps.append("worker 2 SIGSTOPped")
        # Paused until its session ended and the group gave its partitions (and the killed worker's) to the
        # live worker: only then is it a zombie whose late writes must be fenced.
        await wait_for_async(lambda: asyncio.to_thread(lambda: owned(settings, 3) == settings.partitions),
                             session_s + ZOMBIE_TAKEOVER_S, "the live worker to own every partition")
        os.kill(workers[2].proc.pid, signal.SIGCONT)
        steps.append("worker 2 SIGCONTed")
        poison = await sending
        # A supervisor restarts whatever died (the zombie exits when it finds itself fenced).
        for worker in (workers[1], workers[2]):
            if not worker.alive():
                worker.start(wait_ready=False)
                steps.append(f"worker {workers.index(worker)} restarted")

        sent_ids = {cmd.command_id for cmd in commands}

        async def all_decided():
            events = await ledger.read_all(settings.events_topic)
            return events if sent_ids <= {ev.command_id for ev in events} else None

        await wait_for_async(all_decided, 180, f"an outcome for every command after {steps}", 1.0)

        async def settled():
            events = await ledger.read_all(settings.events_topic)
            return events if not crash._in_transit(events) else None

        events = await crash._poll(settled, crash.SETTLE_TIMEOUT_S) or await ledger.read_all(settings.events_topic)
        dlq = await read_topic(settings, settings.dlq_topic)
        legs = await read_topic(settings, settings.transfer_legs_topic)
    for worker in workers:
        if worker.alive():
            worker.stop()

    leg_ids = Counter(ledger.legs.decode(record.value).command_id for record in legs)
    assert_exactly_once(events, sent_ids, dlq, poison, leg_ids)
    assert_stores_equal_replay_and_money_is_conserved(events, _freshest_stores(settings))
