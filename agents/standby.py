"""Standby replicas: keep a warm store of partitions another worker owns, so a takeover costs the lag.

The group's plan (agents/membership.py) names `processor_standby_replicas` standby members per partition.
A standby tails the partition of `wallet.events` (read_committed) and folds each event into its local store
exactly as a restore does (agents/restore.py `fold_records`), writing the store with the offset marker every
`processor_standby_fold_chunk_events` events, and letting the worker's event loop turn in between. When the
partition is assigned to this worker, the processor takes the store over and catches up the rest; the assignor
prefers the warmest member, so that is usually this one.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from app import identity, metrics
from app.codec import EventCodec
from app.kafka import consumer_options
from app.settings import Settings
from agents.restore import fold_records
from tables.wallet_store import PartitionStore

log = logging.getLogger("wallet.standby")


class StandbyTailer:
    """Tails `wallet.events` for the partitions this worker stands by for; see the module docstring."""

    def __init__(self, settings: Settings, codec: EventCodec, stores: dict[int, PartitionStore]) -> None:
        self.settings = settings
        self.codec = codec
        self._stores = stores  # the processor's local stores, shared: a standby's store is opened here
        self._open_store = None
        self.partitions: set[int] = set()
        self._changed = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None

    def bind(self, open_store) -> None:
        """`open_store(partition) -> PartitionStore`: how to get (or open) the local store of a partition."""
        self._open_store = open_store

    def follow(self, partitions: set[int]) -> None:
        """Stand by for exactly `partitions` from now on."""
        if partitions != self.partitions:
            self.partitions = set(partitions)
            self._changed.set()
            metrics.processor_standby_partitions.set(len(self.partitions))

    def release(self, partition: int) -> None:
        """Stop tailing `partition` (it is being assigned to this worker); no fold of it happens after."""
        if partition in self.partitions:
            self.partitions.discard(partition)
            self._changed.set()
            metrics.processor_standby_partitions.set(len(self.partitions))
        try:
            metrics.processor_standby_lag_events.remove(str(partition))
        except KeyError:
            pass  # no lag reported for it yet

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(**consumer_options(self.settings, None))
        self._consumer = consumer
        await consumer.start()
        try:
            assigned: set[int] = set()
            while True:
                if self._changed.is_set() or assigned != self.partitions:
                    self._changed.clear()
                    assigned = set(self.partitions)
                    tps = [TopicPartition(self.settings.events_topic, p) for p in sorted(assigned)]
                    consumer.assign(tps)
                    for tp in tps:
                        consumer.seek(tp, self._open_store(tp.partition).events_offset)
                if not assigned:
                    metrics.processor_standby_lag_events_max.set(0)
                    await self._changed.wait()
                    continue
                batch = await consumer.getmany(timeout_ms=self.settings.processor_standby_fetch_wait_ms,
                                               max_records=self.settings.processor_standby_fetch_records_max)
                await self.codec.ensure(r.value for records in batch.values() for r in records)
                await self._fold(batch)
                worst = 0
                for tp in consumer.assignment():
                    end = consumer.last_stable_offset(tp)
                    if end is not None and tp.partition in self.partitions:
                        lag = max(0, end - self._stores[tp.partition].events_offset)
                        metrics.processor_standby_lag_events.labels(str(tp.partition)).set(lag)
                        worst = max(worst, lag)
                metrics.processor_standby_lag_events_max.set(worst)
        finally:
            await consumer.stop()

    async def _fold(self, batch: dict) -> None:
        """Fold fetched events into the standby stores, `processor_standby_fold_chunk_events` at a time, each
        written before the loop turns. Between chunks the followed partitions may change (a promotion releases
        one): the rest of the batch is then dropped, and the loop seeks each partition back to its store's
        offset."""
        retention_start_ms = identity.retention_start_ms(int(time.time() * 1000), self.settings.command_retention_s)
        chunk_events = self.settings.processor_standby_fold_chunk_events
        for tp, records in batch.items():
            for first in range(0, len(records), chunk_events):
                if self._changed.is_set():
                    return
                if tp.partition not in self.partitions:
                    break  # released while the fetch was in flight: the owner path catches it up
                store = self._open_store(tp.partition)
                start = store.events_offset
                chunk = records[first:first + chunk_events]
                fold_records(store, self.codec, (record for record in chunk if record.offset >= start),
                             retention_start_ms)
                store.apply()
                await asyncio.sleep(0)

    def close(self) -> None:
        self.partitions = set()
