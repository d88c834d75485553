"""Elastic processing under load: three processor workers, then a fourth, a SIGTERM, a SIGKILL and a SIGSTOP.

30,000 mixed commands (transfers across partitions, holds, producer resends, poison) flow at 800/s while the
group changes under them. Afterwards, read with read_committed: every command has exactly one outcome, each
poison message is in the DLQ once, each transfer leg is published once, no transfer is left in transit, each
partition's freshest store equals a replay of the events, every hash chain verifies and money is conserved.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter, defaultdict

from app import identity
from app.domain import events as e
from app.domain.ledger import replay, verify_chain
from tables.wallet_store import decode_state, open_read_only
from tests.conftest import prepare_topics
from tests.harness import Ledger, WorkerProcess, isolated_settings, read_topic, wait_for_async
from tests.system import test_crash_exactly_once as crash

COMMANDS = 30_000
SEED = 11
WORKERS = 3


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


async def test_workers_joining_leaving_dying_and_pausing_under_load_lose_and_double_nothing(stack, monkeypatch):
    monkeypatch.setattr(crash, "COMMANDS", COMMANDS)
    settings = prepare_topics(isolated_settings(stack, "elastic-sys", processor_standby_replicas=1))
    rng = random.Random(SEED)
    wallets, commands = crash.build_commands(rng)
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
        await asyncio.sleep(session_s + 4)
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

    dlq_values = Counter(record.value for record in dlq)
    assert set(dlq_values) == set(poison), "every poison message, and nothing else, is in the DLQ"
    assert max(dlq_values.values()) == 1, "a poison message is in the DLQ twice"
    leg_ids = Counter(ledger.legs.decode(record.value).command_id for record in legs)
    expected_legs = {identity.credit_command_id(ev.wallet_id, ev.transfer_id) for ev in events
                     if isinstance(ev, e.TransferDebited)}
    expected_legs |= {identity.refund_command_id(ev.source_wallet_id, ev.transfer_id) for ev in events
                      if isinstance(ev, e.TransferCreditRejected)}
    assert set(leg_ids) == expected_legs and max(leg_ids.values()) == 1, "each transfer leg is published once"

    counts = Counter(ev.command_id for ev in events)
    duplicated = {cid: n for cid, n in counts.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} command ids have more than one outcome, e.g. {list(duplicated)[:5]}"
    assert not sent_ids - set(counts), "every command has an outcome"
    assert not crash._in_transit(events), "no transfer is left in transit"

    by_wallet: dict[str, list[e.EventBase]] = defaultdict(list)
    for event in events:
        by_wallet[event.wallet_id].append(event)
    for wallet_events in by_wallet.values():
        verify_chain(wallet_events)
    replayed = replay(events)
    table, gauges = {}, []
    for path in _freshest_stores(settings):
        db = open_read_only(path)
        try:
            for key, value in db.items(from_key=b"w/"):
                if not key.startswith(b"w/"):
                    break
                table[key[2:].decode()] = decode_state(key[2:].decode(), value)
            gauges.append(json.loads(db[b"m/gauges"]))
        finally:
            db.close()
    assert table == replayed, "each partition's freshest store must equal a replay of the committed events"
    assert sum(g["in_transit"].get("EUR", 0) for g in gauges) == 0

    deposits = sum(ev.amount_minor for ev in events if isinstance(ev, e.Deposited))
    withdrawals = sum(ev.amount_minor for ev in events if isinstance(ev, e.Withdrawn))
    captures = sum(ev.amount_minor for ev in events if isinstance(ev, e.HoldCaptured))
    assert sum(state.balance_minor for state in replayed.values()) == deposits - withdrawals - captures
