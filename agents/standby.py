"""Standby replicas: keep a warm store of partitions another worker owns, so a takeover costs the lag.

The group's plan (agents/membership.py) names `processor_standby_replicas` standby members per partition.
A standby tails the partition of `wallet.events` (read_committed) and folds each event into its local store
exactly as a restore does (agents/restore.py `fold_records`), writing the store once per fetched batch with
the offset marker. When the partition is assigned to this worker, the processor takes the store over and
catches up the rest; the assignor prefers the warmest member, so that is usually this one.

A standby gives way to deciding. While this worker's own partitions have a backlog (a full batch of commands
waiting), folding the events of partitions it does not own would take CPU from the commands it does: the
standby waits instead, until one of its stores is `processor_standby_defer_lag_max_events` behind, and
catches up once the backlog is decided. On a machine whose cores are all busy deciding (a burst, a drain)
that is about a sixth more commands decided per second (docs/BENCHMARKS.md); a takeover during the burst
replays up to that many more events.
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

# How long one fetch of the standby partitions waits, and how many events one fetch folds at most.
STANDBY_FETCH_WAIT_MS = 200
STANDBY_FETCH_RECORDS_MAX = 500
# While deferring to the worker's backlog, how often the standby looks again (backlog, its own lag).
STANDBY_DEFER_CHECK_S = 0.2


class StandbyTailer:
    """Tails `wallet.events` for the partitions this worker stands by for; see the module docstring."""

    def __init__(self, settings: Settings, codec: EventCodec, stores: dict[int, PartitionStore]) -> None:
        self.settings = settings
        self.codec = codec
        self._stores = stores  # the processor's local stores, shared: a standby's store is opened here
        self._open_store = None
        self._backlog = lambda: 0
        self.partitions: set[int] = set()
        self._changed = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None

    def bind(self, open_store, backlog=None) -> None:
        """`open_store(partition) -> PartitionStore`: how to get (or open) the local store of a partition;
        `backlog() -> int`: records of the worker's own partitions waiting to be decided."""
        self._open_store = open_store
        if backlog is not None:
            self._backlog = backlog

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
                if await self._deferring(consumer):
                    await asyncio.sleep(STANDBY_DEFER_CHECK_S)
                    metrics.processor_standby_deferred_seconds.inc(STANDBY_DEFER_CHECK_S)
                    continue
                batch = await consumer.getmany(timeout_ms=STANDBY_FETCH_WAIT_MS,
                                               max_records=STANDBY_FETCH_RECORDS_MAX)
                await self.codec.ensure(r.value for records in batch.values() for r in records)
                self._fold(batch)
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

    async def _deferring(self, consumer: AIOKafkaConsumer) -> bool:
        """True while the worker's own backlog is a full batch or more and every standby store is less than
        `processor_standby_defer_lag_max_events` behind (their lag asked of the broker, as the fetches that
        would tell it are the work deferred)."""
        lag_max = self.settings.processor_standby_defer_lag_max_events
        if not lag_max or self._backlog() < self.settings.processor_batch_size_max:
            return False
        tps = [tp for tp in consumer.assignment() if tp.partition in self.partitions]
        ends = await consumer.end_offsets(tps)
        worst = 0
        for tp, end in ends.items():
            if tp.partition in self.partitions:
                lag = max(0, end - self._stores[tp.partition].events_offset)
                metrics.processor_standby_lag_events.labels(str(tp.partition)).set(lag)
                worst = max(worst, lag)
        metrics.processor_standby_lag_events_max.set(worst)
        return worst < lag_max

    def _fold(self, batch: dict) -> None:
        """Fold fetched events into the standby stores (no await: a promotion cannot interleave)."""
        retention_start_ms = identity.retention_start_ms(int(time.time() * 1000), self.settings.command_retention_s)
        for tp, records in batch.items():
            if tp.partition not in self.partitions:
                continue  # released while the fetch was in flight: the owner path catches it up
            store = self._open_store(tp.partition)
            start = store.events_offset
            fold_records(store, self.codec, (record for record in records if record.offset >= start),
                         retention_start_ms)
            store.apply()

    def close(self) -> None:
        self.partitions = set()
