"""Catching partitions' stores up from `wallet.events` (their changelog) before the processor decides.

The store is a fold of the committed event log (tables/wallet_store.py), so restoring is replaying the
events after the store's offset marker with `evolve`. Seen command ids are rebuilt from the events too:
an event's `timestamp_ms` is the processor's clock when it decided the command, so the replay rebuilds the
same retention index the live processor wrote (app/identity.py).

A catch-up runs as a task of its own, outside Kafka's rebalance callbacks (agents/handover.py): it replays
all the partitions it is given at once, writes each store and yields to the event loop every
`RESTORE_WRITE_EVERY` events (so heartbeats and the other partitions' batches go on), and hands each
partition back as soon as its store reached the end the log had when the catch-up started.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from app import identity
from app.codec import EventCodec
from app.domain.ledger import evolve
from app.intake import FINGERPRINT_HEADER
from agents.gauges import gauge_deltas
from tables.wallet_store import PartitionStore

log = logging.getLogger("wallet.processor")

# Events folded between two store writes; the catch-up yields to the worker's other work after each write,
# so one slice of CPU stays well under the heartbeat interval and a batch's latency.
RESTORE_WRITE_EVERY = 1000
# Most events one fetch of a catch-up returns (all its partitions together).
RESTORE_FETCH_RECORDS_MAX = 5000
# The longest one fetch waits before the catch-up looks at its positions again: the last offsets before the
# end may be transaction markers or an aborted transaction (a killed owner's), which yield no record but move
# the position; a longer wait would be spent in full on them.
RESTORE_FETCH_WAIT_MS = 10


def fold_records(store: PartitionStore, codec: EventCodec, records: Iterable, retention_start_ms: int) -> None:
    """Fold committed event records of one partition (in offset order) into the store's staged changes, and
    move its offset marker past the last; the caller writes the store (`apply`).

    Per record: the wallet evolved by the event, and its seen-command marker (decision time, fingerprint
    header, the event's bytes) while it is inside the retention window. The fingerprint header is found
    without building a dict, the partition's figures are summed over the records and staged once (a figure a
    record touched is written even when the sum is zero, as the owner's per-event staging writes it), and the
    offset marker is set once. `evolve` still checks every event against its wallet (version continuity,
    known holds): a corrupt log stops the fold."""
    wallet, stage, stage_wallet = store.wallet, store.stage, store.stage_wallet
    in_transit_minor: dict[str, int] = {}  # currency -> change, minor units
    holds_open = 0
    gauged = False
    last = None
    for record in records:
        fingerprint = ""
        for key, header in record.headers or ():
            if key == FINGERPRINT_HEADER:
                fingerprint = header.decode()
        value = record.value
        event = codec.decode(value)
        before = wallet(event.wallet_id)
        after = evolve(before, event)
        if event.timestamp_ms >= retention_start_ms:
            stage(before, after, event.command_id, event.timestamp_ms, fingerprint, value)
        else:
            stage_wallet(before, after, event.command_id)
        in_transit_delta_minor, holds_open_delta = gauge_deltas(event)
        if in_transit_delta_minor or holds_open_delta:
            gauged = True
            holds_open += holds_open_delta
            if in_transit_delta_minor:
                in_transit_minor[event.currency] = in_transit_minor.get(event.currency, 0) + in_transit_delta_minor
        last = record
    if gauged:
        store.track_sums(in_transit_minor, holds_open)
    if last is not None:
        store.changes.events_offset = last.offset + 1


def nothing_to_replay(start: int, end: int) -> bool:
    """Whether offsets [start, end) of an events partition hold no event to replay, known without a fetch.

    Every event is written in a transaction, so a committed event is followed by its commit marker before
    the end: a range of one offset (the marker of the transaction whose last event the store reflects, the
    usual state of a warm store) holds none, and neither does an empty range. A store ahead of the log
    (`start > end`) is never restored from it."""
    return end - start <= 1


async def catch_up(consumer: AIOKafkaConsumer, events_topic: str, codec: EventCodec,
                   stores: dict[int, PartitionStore], retention_s: int,
                   caught_up: Callable[[int], Awaitable[None]]) -> None:
    """Replay `events_topic` into each of `stores` (partition -> store) from its marker to the partition's
    end offset read now; await `caught_up(partition)` as each one gets there.

    The caller holds every partition's fence (its transactional producer started), so the end read here is
    the end: nothing is written to these partitions until they are handed back. `consumer` is an unassigned
    read_committed consumer without a group, used by one catch-up at a time. Cancellable at any await: each
    store is written before every await, so it never keeps half a fold.
    """
    tps = {TopicPartition(events_topic, p): p for p in sorted(stores)}
    pending: dict[TopicPartition, int] = {}  # tp -> events replayed so far
    consumer.assign(list(tps))
    try:
        ends = await consumer.end_offsets(list(tps))
        for tp, partition in tps.items():
            start = stores[partition].events_offset
            if nothing_to_replay(start, ends[tp]):
                consumer.pause(tp)
                log.info("store restored", extra={"partition": partition, "events": 0, "seconds": 0.0})
                await caught_up(partition)
            else:
                consumer.seek(tp, start)
                pending[tp] = 0
        started = time.perf_counter()
        retention_start_ms = identity.retention_start_ms(int(time.time() * 1000), retention_s)
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=RESTORE_FETCH_WAIT_MS,
                                           max_records=RESTORE_FETCH_RECORDS_MAX)
            await codec.ensure(record.value for records in batch.values() for record in records)
            for tp, records in batch.items():
                store = stores[tps[tp]]
                for first in range(0, len(records), RESTORE_WRITE_EVERY):
                    fold_records(store, codec, records[first:first + RESTORE_WRITE_EVERY], retention_start_ms)
                    store.apply()
                    pending[tp] += min(RESTORE_WRITE_EVERY, len(records) - first)
                    await asyncio.sleep(0)  # heartbeats, the other partitions' batches
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    consumer.pause(tp)
                    log.info("store restored", extra={"partition": tps[tp], "events": pending.pop(tp),
                                                      "seconds": round(time.perf_counter() - started, 3)})
                    await caught_up(tps[tp])
    except BaseException:
        for tp in pending:
            stores[tps[tp]].discard()  # a fold a fault interrupted: its events come again next time
        raise
    finally:
        consumer.unsubscribe()
