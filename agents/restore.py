"""Catching a partition's store up from `wallet.events` (its changelog) before the processor decides.

The store is a fold of the committed event log (tables/wallet_store.py), so restoring is replaying the
events after the store's offset marker with `evolve`. Seen command ids are rebuilt from the events too:
an event's `timestamp_ms` is the processor's clock when it decided the command, so the replay rebuilds the
same retention index the live processor wrote (app/identity.py).
"""

from __future__ import annotations

import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from app import identity
from app.codec import EventCodec
from app.domain import events as e
from app.domain.ledger import evolve
from app.intake import FINGERPRINT_HEADER
from agents.gauges import gauge_deltas
from tables.wallet_store import PartitionStore

log = logging.getLogger("wallet.processor")

# Events replayed between two store writes while catching a store up.
RESTORE_WRITE_EVERY = 5000
# A short fetch wait: the last offsets before the end may be transaction markers, which yield no record.
RESTORE_FETCH_WAIT_MS = 100


def replay_event(store: PartitionStore, event: e.EventBase, value: bytes, fingerprint: str,
                 retention_start_ms: int) -> None:
    """Fold one committed event into the store's staged changes (its seen-marker while retained)."""
    before = store.wallet(event.wallet_id)
    after = evolve(before, event)
    if event.timestamp_ms >= retention_start_ms:
        store.stage(before, after, event.command_id, event.timestamp_ms, fingerprint, value)
    else:
        store.stage_wallet(before, after, event.command_id)
    store.track(event, *gauge_deltas(event))


async def restore(consumer: AIOKafkaConsumer, events_topic: str, codec: EventCodec, partition: int,
                  store: PartitionStore, retention_s: int) -> int:
    """Replay `events_topic`'s `partition` from the store's marker to its end; the number of events replayed."""
    tp = TopicPartition(events_topic, partition)
    consumer.assign([tp])
    start = store.events_offset
    end = (await consumer.end_offsets([tp]))[tp]
    if start >= end:
        return 0
    consumer.seek(tp, start)
    retention_start_ms = identity.retention_start_ms(int(time.time() * 1000), retention_s)
    replayed = 0
    started = time.perf_counter()
    while await consumer.position(tp) < end:
        batch = await consumer.getmany(tp, timeout_ms=RESTORE_FETCH_WAIT_MS, max_records=RESTORE_WRITE_EVERY)
        await codec.ensure(record.value for record in batch.get(tp, ()))
        for record in batch.get(tp, []):
            headers = dict(record.headers or ())
            replay_event(store, codec.decode(record.value), record.value,
                         headers.get(FINGERPRINT_HEADER, b"").decode(), retention_start_ms)
            store.changes.events_offset = record.offset + 1
            replayed += 1
        store.apply()
    log.info("store restored", extra={"partition": partition, "events": replayed,
                                      "seconds": round(time.perf_counter() - started, 3)})
    return replayed
