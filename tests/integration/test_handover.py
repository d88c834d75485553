"""Handover of partitions between processor workers on the real stack: catch-ups outside the rebalance.

A worker that takes over a partition with a long history catches its store up in a task of its own: the
partitions it keeps go on deciding meanwhile, it keeps heartbeating (no eviction, no second rebalance), the
partition under catch-up answers strong reads with 421 and decides its waiting commands only on the caught-up
store, exactly once. A partition that moved away and came back is caught up from the log again.

The long history is written the way the processor writes it: outcome events of OpenWallet commands decided
by the pure domain, encoded with the events codec, with their fingerprint header, in Kafka transactions on
the partition of `wallet.events` the wallets live on. A worker started afterwards finds it as history.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.domain import commands as c
from app.domain import events as e
from app.domain.ledger import decide_and_evolve
from app.intake import FINGERPRINT_HEADER, fingerprint
from app.kafka import RecordBatches, consumer_options, partition_for, producer_options
from tables.document import TABLE_PATH
from tables.wallet_store import PartitionStore
from tests.conftest import prepare_topics
from tests.harness import Ledger, WorkerProcess, isolated_settings, new_id, now_ms, store_path, wait_for, \
    wait_for_async
from tests.integration.test_elastic_processing import metric, owned
from tests.system.ledger_checks import assert_stores_equal_replay_and_money_is_conserved

WAIT_S = 120
# Events of history on the partition taken over: its catch-up must last well beyond the session (6 s)
# and the few seconds the kept partitions need to decide, at the 4,000-10,000 events/s a store replays here.
HISTORY_EVENTS = 80_000
HISTORY_EVENTS_PER_TRANSACTION = 10_000
HISTORY_PARTITION = 3
LIVE_WALLETS_PER_PARTITION = 6


def _settings(stack, name: str):
    """Without standbys (worker ports come from below the ephemeral range: wallet/isolation.py)."""
    return prepare_topics(isolated_settings(stack, name, processor_standby_replicas=0))


def _wallets_on(partition: int, count: int, partitions: int, prefix: str) -> list[str]:
    found = []
    while len(found) < count:
        wallet_id = new_id(prefix)
        if partition_for(wallet_id.encode(), partitions) == partition:
            found.append(wallet_id)
    return found


async def _write_history(settings, ledger: Ledger, wallets: list[str]) -> None:
    """The outcomes of opening `wallets` (all on one partition), committed to `wallet.events`."""
    producer = AIOKafkaProducer(**producer_options(settings, transactional_id=f"{settings.app_id}-history"))
    await producer.start()
    try:
        partition = partition_for(wallets[0].encode(), settings.partitions)
        for first in range(0, len(wallets), HISTORY_EVENTS_PER_TRANSACTION):
            await producer.begin_transaction()
            batches = RecordBatches(producer)
            for wallet_id in wallets[first:first + HISTORY_EVENTS_PER_TRANSACTION]:
                command = c.OpenWallet(command_id=f"open-{wallet_id}", wallet_id=wallet_id, timestamp_ms=now_ms(),
                                       owner_id="o", currency="EUR")
                (event,), _ = decide_and_evolve(None, command, now_ms())
                await batches.add(settings.events_topic, partition, wallet_id.encode(), ledger.events.encode(event),
                                  [(FINGERPRINT_HEADER, fingerprint(command).encode())])
            await batches.submit()
            await producer.commit_transaction()
    finally:
        await producer.stop()


def _log(worker: WorkerProcess) -> list[dict]:
    lines = []
    for line in worker.log_lines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            pass
    return lines


def _assigned(worker: WorkerProcess) -> set[int]:
    """Partitions the worker's log says it decides now ("partition assigned" minus "partition revoked")."""
    partitions: set[int] = set()
    for line in _log(worker):
        if line.get("msg") == "partition assigned":
            partitions.add(int(line["partition"]))
        elif line.get("msg") == "partition revoked":
            partitions.discard(int(line["partition"]))
    return partitions


def _group_owners(settings) -> dict[int, str]:
    """partition -> the owner's table-view URL, from the live group (empty while it rebalances)."""
    from web.owners import OwnerDirectory

    return OwnerDirectory(settings)._describe()


def _table_status(settings, instance: int, wallet_id: str) -> int:
    url = f"http://127.0.0.1:{settings.worker_web_port + instance}" + TABLE_PATH.format(wallet_id=wallet_id)
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def _deposits(wallets: list[str], round_: int) -> list[c.CommandBase]:
    return [c.Deposit(command_id=f"dep-{round_}-{w}", wallet_id=w, timestamp_ms=now_ms(), amount_minor=100,
                      currency="EUR") for w in wallets]


async def _read_events(ledger: Ledger, partitions: set[int]) -> list[e.EventBase]:
    """Every committed event of `partitions` of the events topic (read_committed), to its current end."""
    settings = ledger.settings
    consumer = AIOKafkaConsumer(**consumer_options(settings, None))
    await consumer.start()
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records = []
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for batch in (await consumer.getmany(timeout_ms=200, max_records=10_000)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    await ledger.events.ensure(r.value for r in records)
    return [ledger.events.decode(r.value) for r in records]


async def _outcomes(ledger: Ledger, ids: set[str], partitions: set[int] | None = None) -> list[e.EventBase]:
    """The events of `partitions` (default: all) once every command in `ids` has an outcome there."""
    async def decided():
        events = await _read_events(ledger, partitions or set(range(ledger.settings.partitions)))
        return events if ids <= {ev.command_id for ev in events} else None
    return await wait_for_async(decided, WAIT_S, f"outcomes of {len(ids)} commands", interval_s=0.2)


def _first_assigned_at(worker: WorkerProcess, partition: int, after_s: float) -> float | None:
    """When (s since epoch) the worker's log first says `partition` is deciding, after `after_s`."""
    return next((line["ts"] for line in _log(worker) if line.get("msg") == "partition assigned"
                 and int(line["partition"]) == partition and line["ts"] >= after_s), None)


@pytest.mark.parametrize("restore_processes_max", [0, 1], ids=["in-the-worker", "in-a-child-process"])
async def test_a_long_catch_up_leaves_the_kept_partitions_deciding_and_the_worker_in_the_group(stack,
                                                                                             restore_processes_max):
    settings = replace(_settings(stack, "catchup"), restore_processes_max=restore_processes_max)
    history = _wallets_on(HISTORY_PARTITION, HISTORY_EVENTS, settings.partitions, "hist")
    live = {p: _wallets_on(p, LIVE_WALLETS_PER_PARTITION, settings.partitions, "live")
            for p in range(settings.partitions)}
    first = WorkerProcess(settings, ["processor"], instance=0)
    second = WorkerProcess(settings, ["processor"], instance=1)
    async with Ledger(settings) as ledger:
        await _write_history(settings, ledger, history)
        first.start()  # alone: it owns every partition and catches the history up
        opens = [c.OpenWallet(command_id=f"open-{w}", wallet_id=w, timestamp_ms=now_ms(), owner_id="o",
                              currency="EUR") for wallets in live.values() for w in wallets]
        await ledger.send(*opens)
        await _outcomes(ledger, {cmd.command_id for cmd in opens})

        second.start()  # cold and without standbys: the first keeps the history's partition (warmest)
        wait_for(lambda: owned(settings, 0) == 2 and owned(settings, 1) == 2, WAIT_S, "the workers to split")
        kept = _assigned(second)
        assert HISTORY_PARTITION not in kept and len(kept) == 2, kept
        rebalances_before = metric(settings, 1, "wallet_processor_rebalances_total")

        killed_at = time.time()
        first.kill()  # the second takes the history's partition over: a catch-up of HISTORY_EVENTS events
        second_url = f":{settings.worker_web_port + 1}"

        def all_to_second() -> bool:
            owners = _group_owners(settings)
            return (set(owners) == set(range(settings.partitions))
                    and all(url.endswith(second_url) for url in owners.values()))

        await asyncio.to_thread(wait_for, all_to_second, WAIT_S, "the group to give every partition to the second", 0.2)
        # Not caught up yet: its table answers 421 (the API asks the group again, then 503), never stale data.
        status_while_catching_up, checked_at = _table_status(settings, 1, history[0]), time.time()

        kept_deposits = _deposits([w for p in sorted(kept) for w in live[p]], 1)
        waiting_deposits = _deposits(live[HISTORY_PARTITION] + history[:50], 1)
        await ledger.send(*kept_deposits, *waiting_deposits)
        kept_events = await _outcomes(ledger, {cmd.command_id for cmd in kept_deposits}, kept)
        events = await _outcomes(ledger, {cmd.command_id for cmd in waiting_deposits}, {HISTORY_PARTITION})
        wait_for(lambda: owned(settings, 1) == settings.partitions, WAIT_S, "the catch-up to end")
        caught_up_at = _first_assigned_at(second, HISTORY_PARTITION, killed_at)
        assert caught_up_at is not None
        assert checked_at < caught_up_at and status_while_catching_up == 421
        # The kept partitions decided while the history's partition was still catching up.
        kept_decided_ms = [ev.timestamp_ms for ev in kept_events if ev.command_id.startswith("dep-1-")]
        # (+ 1: log times are rounded to the ms, decision times truncated)
        assert max(kept_decided_ms) + 1 < caught_up_at * 1000, "kept partitions waited for the catch-up"
        # One rebalance (the first worker's death): no eviction of the second during its catch-up.
        assert metric(settings, 1, "wallet_processor_rebalances_total") - rebalances_before == 1
        assert _table_status(settings, 1, history[0]) == 200
        events = await ledger.read_all(settings.events_topic)
    assert second.stop() == 0

    counts = Counter(ev.command_id for ev in events)
    assert max(counts.values()) == 1, [cid for cid, n in counts.items() if n > 1][:5]
    by_command = {ev.command_id: ev for ev in events}
    # Decided on the caught-up store: the history's wallets exist there, so every deposit applied.
    for cmd in kept_deposits + waiting_deposits:
        assert isinstance(by_command[cmd.command_id], e.Deposited), by_command[cmd.command_id]
        assert by_command[cmd.command_id].balance_after_minor == 100
    assert_stores_equal_replay_and_money_is_conserved(
        events, [store_path(settings, p, instance=1) for p in range(settings.partitions)])


async def test_a_partition_that_moved_away_and_came_back_is_caught_up_before_it_decides(stack):
    settings = _settings(stack, "comeback")
    # Wallets on every partition: a moved partition without one would have no events to catch up from.
    wallets = [w for p in range(settings.partitions) for w in _wallets_on(p, 6, settings.partitions, "cb")]
    first = WorkerProcess(settings, ["processor"], instance=0).start()
    second = WorkerProcess(settings, ["processor"], instance=1)
    sent: list[c.CommandBase] = []
    async with Ledger(settings) as ledger:
        sent += [c.OpenWallet(command_id=f"open-{w}", wallet_id=w, timestamp_ms=now_ms(), owner_id="o",
                              currency="EUR") for w in wallets] + _deposits(wallets, 0)
        await ledger.send(*sent)
        await _outcomes(ledger, {cmd.command_id for cmd in sent})

        second.start()  # half the partitions move to it; the first keeps the others
        wait_for(lambda: owned(settings, 0) == 2 and owned(settings, 1) == 2, WAIT_S, "the workers to split")
        moved = _assigned(second)
        sent += _deposits(wallets, 1)  # the moved partitions' deposits are decided by the second worker only
        await ledger.send(*sent[-len(wallets):])
        await _outcomes(ledger, {cmd.command_id for cmd in sent})

        assert second.stop() == 0  # the moved partitions come back to the first, whose stores of them are stale
        wait_for(lambda: owned(settings, 0) == settings.partitions, WAIT_S, "the first worker to own everything")
        restored = [line for line in _log(first) if line.get("msg") == "store restored"
                    and int(line["partition"]) in moved and line.get("events")]
        assert {int(line["partition"]) for line in restored} == moved, "came back: caught up from the log"
        sent += _deposits(wallets, 2)
        await ledger.send(*sent[-len(wallets):])
        events = await _outcomes(ledger, {cmd.command_id for cmd in sent})
    assert first.stop() == 0

    counts = Counter(ev.command_id for ev in events)
    assert max(counts.values()) == 1, [cid for cid, n in counts.items() if n > 1][:5]
    last = {ev.wallet_id: ev for ev in events}
    assert {last[w].balance_after_minor for w in wallets} == {300}
    assert_stores_equal_replay_and_money_is_conserved(
        events, [store_path(settings, p, instance=0) for p in range(settings.partitions)])


def _restore_children(worker: WorkerProcess, partition: int) -> list[int]:
    """Pids of the child restore processes the worker's log says it started for `partition` since it started."""
    if not worker.log_path.exists():
        return []
    return [int(line["pid"]) for line in _log(worker)
            if line.get("msg") == "restore process started" and int(line["partition"]) == partition]


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, dead but not yet reaped, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _store_marker(settings, partition: int, instance: int) -> int:
    """The events offset the worker's store of `partition` reflects, read from its folder (no worker on it)."""
    store = PartitionStore(store_path(settings, partition, instance))
    try:
        return store.events_offset
    finally:
        store.close()


async def test_a_cold_catch_up_runs_in_a_child_process_that_ends_with_its_worker(stack):
    """A store far behind the log is replayed by a child process (agents/restore_process.py). Killed with its
    worker (SIGKILL: the kernel's parent-death signal) or stopped with it (SIGTERM: the worker kills and reaps
    it), it leaves a store behind, never torn, which the next worker's child finishes."""
    settings = replace(_settings(stack, "childrestore"), restore_process_min_events=HISTORY_EVENTS // 4,
                       restore_processes_max=2)
    history = _wallets_on(HISTORY_PARTITION, HISTORY_EVENTS, settings.partitions, "hist")
    worker = WorkerProcess(settings, ["processor"], instance=0)
    async with Ledger(settings) as ledger:
        await _write_history(settings, ledger, history)
        for stop in ("SIGKILL", "SIGTERM"):
            worker.start(wait_ready=False)
            pid = wait_for(lambda: (_restore_children(worker, HISTORY_PARTITION) or [None])[0], WAIT_S,
                           "the worker to start a restore process for the history's partition", 0.05)
            assert _running(pid) and "agents.restore_process" in Path(f"/proc/{pid}/cmdline").read_text()
            if stop == "SIGKILL":
                worker.kill()  # the worker's process group: the child has a session of its own
            else:
                assert worker.stop() == 0, "a worker stopped during a child restore should exit cleanly"
                assert any(line.get("msg") == "restore process stopped" and line["pid"] == pid for line in _log(worker))
            wait_for(lambda: not _running(pid), WAIT_S, f"the restore process to end with its worker ({stop})", 0.05)
            # Interrupted, not finished: the store stopped part-way, at a slice its marker names.
            assert _store_marker(settings, HISTORY_PARTITION, 0) < HISTORY_EVENTS, stop

        worker.start()  # a third time: its child finishes the history
        assert len(_restore_children(worker, HISTORY_PARTITION)) == 1
        finished = [line for line in _log(worker) if line.get("msg") == "restore process finished"]
        assert [int(line["partition"]) for line in finished] == [HISTORY_PARTITION]
        deposits = _deposits(history[:50], 1)
        await ledger.send(*deposits)
        await _outcomes(ledger, {cmd.command_id for cmd in deposits})
        events = await ledger.read_all(settings.events_topic)
    assert worker.stop() == 0

    counts = Counter(ev.command_id for ev in events)
    assert max(counts.values()) == 1, [cid for cid, n in counts.items() if n > 1][:5]
    by_command = {ev.command_id: ev for ev in events}
    for cmd in deposits:  # decided on the restored store: the history's wallets exist there
        assert isinstance(by_command[cmd.command_id], e.Deposited), by_command[cmd.command_id]
    assert_stores_equal_replay_and_money_is_conserved(
        events, [store_path(settings, p, instance=0) for p in range(settings.partitions)])
