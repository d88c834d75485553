"""Handover of partitions between processor workers: the rebalance listener and the local stores.

aiokafka's group protocol is eager: every rebalance revokes all of a member's partitions and assigns its new
set. Neither callback sends a heartbeat while the assign callback runs, so both stay short:
- **Revoke** finishes the batch in flight (the processor's lock), stops deciding until the assignment
  arrives, cancels a catch-up in progress (its store keeps what it wrote), and flushes the group's offsets
  (agents/input_positions.py). Producers and stores stay open.
- **Assign** keeps what stays: a partition this member held in the generation just before keeps its
  producer and store and goes on at once from its own last committed offsets. Partitions no longer
  assigned stop their producer (their store stays open as a warm copy, agents/standby.py). Each new
  partition is paused first (no fetch, no decision), then its transactional producer is started: that
  fences the previous owner and settles its open transaction. The catch-up of the new partitions' stores to
  the end of `wallet.events` runs as a task after the callback (agents/restore.py; optionally a store far
  behind is first replayed in a child process, agents/restore_process.py); each partition is resumed, from
  the input positions committed after the fence (agents/input_positions.py), once its store is there.
  Meanwhile heartbeats go on, the other partitions keep deciding, and strong reads of it answer 421 (not
  caught up).
"Held in the generation just before" means the group generation now is the one this member last held its
partitions in plus one: had the member been dropped, or a generation passed without it, another worker may
have owned the partition (and fenced this member's producer) in between, so it is restored and fenced anew.
A worker keeps its stores under its member name, so a restart finds them warm (agents/membership.py prefers
the warmest member).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from app import metrics
from agents.gauges import forget_gauges, publish_gauges
from agents.input_positions import read_positions
from agents.membership import MemberInfo, Plan
from agents.restore import catch_up
from agents.restore_process import restore_far_behind
from agents.transactions import AtLeastOnce, TransactionSlots, start_transaction_slots
from tables.wallet_store import PartitionStore

log = logging.getLogger("wallet.processor")

NO_GENERATION = -1  # aiokafka's generation of a member the coordinator does not (or no longer) know


class Rebalance(ConsumerRebalanceListener):
    """aiokafka awaits these between the group's revoke and assign steps. It only logs a listener's
    exception and goes on, so a failure here is handed to the processor, which fails the worker."""

    def __init__(self, processor) -> None:
        self._processor = processor

    async def on_partitions_revoked(self, revoked) -> None:
        try:
            await self._processor._on_revoked(set(revoked))
        except Exception as exc:
            self._processor._fail(exc)
            raise

    async def on_partitions_assigned(self, assigned) -> None:
        try:
            await self._processor._on_assigned(set(assigned))
        except Exception as exc:
            self._processor._fail(exc)
            raise


def open_local_stores(state_root: Path, partitions: int) -> dict[int, PartitionStore]:
    """The stores this member kept on disk (`<state_root>/p<N>`): they make it the warm choice for them."""
    stores = {}
    if state_root.is_dir():
        for path in sorted(state_root.glob("p*")):
            if path.name[1:].isdigit() and int(path.name[1:]) < partitions:
                stores[int(path.name[1:])] = PartitionStore(path)
    return stores


def group_generation(consumer: AIOKafkaConsumer) -> int:
    """The group generation this member is in, NO_GENERATION once the coordinator dropped it. aiokafka keeps
    it on its coordinator and has no public accessor."""
    return consumer._coordinator.generation


async def _raise(exc: BaseException) -> None:
    raise exc


class PartitionHandover:
    """The processor's side of a rebalance (mixed into agents.processor.Processor, which owns the state:
    `stores` caught up and deciding, `producers` the fences held (deciding or catching up), `committed` the
    input offsets committed for them, `_settled` set while no rebalance is in progress)."""

    def member_info(self) -> MemberInfo:
        """Sent when joining the group: how warm each local store is."""
        return MemberInfo(self.member_name, {p: store.events_offset for p, store in self.local.items()})

    def _on_plan(self, plan: Plan) -> None:
        self.plan = plan
        self.standby.follow({p for p, names in plan.standbys.items()
                             if self.member_name in names and plan.owners.get(p) != self.member_name})

    def _store_folder(self, partition: int) -> Path:
        return self.state_root / f"p{partition}"

    def _store(self, partition: int) -> PartitionStore:
        if partition not in self.local:
            self.local[partition] = PartitionStore(self._store_folder(partition))
        return self.local[partition]

    def _input_partitions(self, partitions) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for p in sorted(partitions)
                for topic in (self.settings.commands_topic, self.settings.transfer_legs_topic)]

    def _fail(self, exc: BaseException) -> None:
        """End the worker with `exc` (raised from a task of the processor's task group)."""
        log.critical("rebalance failed", exc_info=exc)
        self._tasks.create_task(_raise(exc), name="rebalance-failed")

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._settled.clear()  # nothing is decided until the new assignment is in place
        self.generation += 1  # a batch fetched before this rebalance must not be processed after it
        self._revoked_in_generation = group_generation(self._consumer)
        if not self._rebalance_started:
            self._rebalance_started = time.perf_counter()
        log.info("rebalance started", extra={"member": self.member_name, "deciding": sorted(self.stores),
                                             "catching_up": sorted(set(self.producers) - set(self.stores))})
        async with self._lock:  # the batch in flight commits (or fails) first
            await self._stop_catch_up()
            if self._positions_in_transaction:
                await self._group_offsets.flush()  # the next owner may be a worker of the release before

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        # Still unsettled since the revoke (aiokafka always calls it first). Not a new generation of batches:
        # records fetched from here on come from this assignment's positions.
        group_now = group_generation(self._consumer)
        partitions = {tp.partition for tp in assigned}
        held = set(self.producers)
        consecutive = (self._revoked_in_generation != NO_GENERATION
                       and self._revoked_in_generation == self._held_in_generation
                       and group_now == self._revoked_in_generation + 1)
        kept = held & partitions if consecutive else set()
        deciding = kept & set(self.stores)
        waiting = partitions - deciding
        released = held - kept
        # Before any await: the fetcher may fetch for this assignment as soon as this callback yields.
        self._consumer.pause(*self._input_partitions(waiting))
        for tp in self._input_partitions(deciding):
            if tp in self.committed:  # our own last commit: the group's copy may lag its commit marker
                self._consumer.seek(tp, self.committed[tp])
        for partition in sorted(released):
            store = self.stores.pop(partition, None)
            if store is not None:
                forget_gauges(partition, store)
            for tp in self._input_partitions({partition}):
                self.committed.pop(tp, None)
            log.info("partition revoked", extra={"partition": partition, "member": self.member_name})
        new = sorted(partitions - kept)
        for partition in new:
            self.standby.release(partition)
        metrics.processor_partitions_owned.set(len(self.stores))
        log.info("assignment received", extra={"member": self.member_name, "kept": sorted(kept), "new": new,
                                               "released": sorted(released)})
        async with self._lock:
            stopping = [self.producers.pop(partition) for partition in sorted(released)]
            await asyncio.gather(*(producer.stop() for producer in stopping))
            started = await asyncio.gather(*(self._partition_producer(partition) for partition in new))
            self.producers.update(zip(new, started))
            self._held_in_generation = group_now
            metrics.processor_rebalances_total.inc()
            if waiting:
                self._catch_up = self._tasks.create_task(self._catch_up_run(waiting), name="catch-up")
            else:
                self._rebalance_done()
            self._settled.set()

    async def _catch_up_run(self, partitions: set[int]) -> None:
        """Catch the stores of `partitions` up and resume each one as it gets there (a task of its own)."""
        # Read after the fence: the previous owner's last transaction, its positions record included, is
        # settled. The group's offsets win where they are later: a worker of a release before the positions
        # record committed through the group (a rolling upgrade), or an operator skipped commands. They are
        # never later than what was decided: this release commits them only after its transactions.
        committed: dict[TopicPartition, int | None] = {}
        if self._positions_in_transaction:
            committed.update(await read_positions(self._restore_consumer, self.settings.processor_offsets_topic,
                                                  partitions))
        for tp in self._input_partitions(partitions):
            group = await self._consumer.committed(tp)
            if group is not None and (committed.get(tp) is None or group > committed[tp]):
                committed[tp] = group
            committed.setdefault(tp, None)

        async def caught_up(partition: int) -> None:
            async with self._lock:
                if not self._settled.is_set():
                    return  # a rebalance began: this catch-up is about to be cancelled
                tps = self._input_partitions({partition})
                for tp in tps:
                    if committed[tp] is not None:
                        self._consumer.seek(tp, committed[tp])
                        self.committed[tp] = committed[tp]
                store = self.stores[partition] = self._store(partition)
                self._consumer.resume(*tps)
                metrics.processor_partitions_owned.set(len(self.stores))
                publish_gauges([(partition, store)])
                log.info("partition assigned", extra={"partition": partition, "member": self.member_name})

        # Far behind (a cold takeover), with restore_processes_max > 0: child processes replay most of it first.
        await restore_far_behind(self.settings, self._restore_consumer, partitions, self.local, self._store,
                                 self._store_folder)
        await catch_up(self._restore_consumer, self.settings.events_topic, self.events,
                       {p: self._store(p) for p in partitions}, self.settings.command_retention_s, caught_up)
        async with self._lock:
            if self._settled.is_set():
                self._rebalance_done()

    async def _stop_catch_up(self) -> None:
        task, self._catch_up = self._catch_up, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # its fault, if any, ends the worker through the task group

    def _rebalance_done(self) -> None:
        """Every assigned partition is deciding."""
        if self._rebalance_started:
            metrics.processor_rebalance_seconds.observe(time.perf_counter() - self._rebalance_started)
            self._rebalance_started = 0.0
        self.ready.set()

    async def _partition_producer(self, partition: int) -> TransactionSlots:
        """The partition's transactional producers, started: starting them fences the previous owner and
        aborts its open transactions, so the log is settled before the store is caught up from it."""
        if self.settings.processing_guarantee != "exactly_once":
            return TransactionSlots([AtLeastOnce(self._shared_producer, self._consumer)])
        return await start_transaction_slots(self.settings, partition)
