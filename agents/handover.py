"""Handover of partitions between processor workers: the rebalance listener and the local stores.

On revoke the processor finishes its batch in flight and stops the partition's producer; on assign it
starts the partition's producer (fencing the previous owner) and catches the store up before the first
command (agents/processor.py `_on_revoked`, `_on_assigned`). A worker keeps its stores under its member
name, so a restart finds them warm (agents/membership.py prefers the warmest member).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from app import metrics
from app.kafka import producer_options
from agents.gauges import forget_gauges, publish_gauges
from agents.membership import MemberInfo, Plan
from agents.restore import restore
from agents.transactions import AtLeastOnce
from tables.wallet_store import PartitionStore

log = logging.getLogger("wallet.processor")


class Rebalance(ConsumerRebalanceListener):
    """aiokafka awaits these between the group's revoke and assign steps."""

    def __init__(self, processor) -> None:
        self._processor = processor

    async def on_partitions_revoked(self, revoked) -> None:
        await self._processor._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        await self._processor._on_assigned(set(assigned))


def open_local_stores(state_root: Path, partitions: int) -> dict[int, PartitionStore]:
    """The stores this member kept on disk (`<state_root>/p<N>`): they make it the warm choice for them."""
    stores = {}
    if state_root.is_dir():
        for path in sorted(state_root.glob("p*")):
            if path.name[1:].isdigit() and int(path.name[1:]) < partitions:
                stores[int(path.name[1:])] = PartitionStore(path)
    return stores


class PartitionHandover:
    """The processor's side of a rebalance (mixed into agents.processor.Processor, which owns the state)."""

    def member_info(self) -> MemberInfo:
        """Sent when joining the group: how warm each local store is."""
        return MemberInfo(self.member_name, {p: store.events_offset for p, store in self.local.items()})

    def _on_plan(self, plan: Plan) -> None:
        self.plan = plan
        self.standby.follow({p for p, names in plan.standbys.items()
                             if self.member_name in names and plan.owners.get(p) != self.member_name})

    def _store(self, partition: int) -> PartitionStore:
        if partition not in self.local:
            self.local[partition] = PartitionStore(self.state_root / f"p{partition}")
        return self.local[partition]

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._rebalance_started = time.perf_counter()
        self.generation += 1  # a batch fetched before this rebalance must not be processed after it
        async with self._lock:  # the batch in flight commits (or fails) first
            for partition in sorted({tp.partition for tp in revoked} & set(self.stores)):
                forget_gauges(partition, self.stores.pop(partition))
                producer = self.producers.pop(partition)
                await producer.stop()
                metrics.processor_partitions_owned.set(len(self.stores))
                log.info("partition revoked", extra={"partition": partition, "member": self.member_name})

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        started = time.perf_counter()
        async with self._lock:
            for partition in sorted({tp.partition for tp in assigned} - set(self.stores)):
                self.standby.release(partition)
                self.producers[partition] = await self._partition_producer(partition)
                store = self._store(partition)
                await restore(self._restore_consumer, self.settings.events_topic, self.events, partition, store,
                              self.settings.command_retention_s)
                self.stores[partition] = store
                log.info("partition assigned", extra={"partition": partition, "member": self.member_name})
            metrics.processor_partitions_owned.set(len(self.stores))
            publish_gauges(self.stores.items())
        metrics.processor_rebalances_total.inc()
        metrics.processor_rebalance_seconds.observe(time.perf_counter() - min(started, self._rebalance_started or started))
        self._rebalance_started = 0.0
        self.ready.set()

    async def _partition_producer(self, partition: int):
        """The partition's transactional producer, started: starting it fences the previous owner and aborts
        its open transaction, so the log is settled before the store is caught up from it."""
        if self.settings.processing_guarantee != "exactly_once":
            return AtLeastOnce(self._shared_producer, self._consumer)
        # A transaction that starts right after the previous commit often hears CONCURRENT_TRANSACTIONS
        # until the broker has written the commit markers (KAFKA-5477); aiokafka then sleeps
        # retry_backoff_ms (default 100 ms) before retrying, which puts 100-200 ms on random commands.
        producer = AIOKafkaProducer(**producer_options(
            self.settings, transactional_id=f"{self.settings.app_id}-processor-p{partition}",
            retry_backoff_ms=self.settings.transaction_retry_backoff_ms))
        await producer.start()
        return producer
