"""The command processor: the one exactly-once part of the ledger.

Processor workers share the partitions of the co-partitioned topics `wallet.commands` and
`wallet.transfer-legs` through one Kafka consumer group (agents/membership.py): start one more and it takes
partitions, stop or lose one and the others take its partitions over. Each owned partition has its own
transactional producer (`<app_id>-processor-p<partition>`, the pattern Kafka Streams' first exactly-once mode
and Faust use, because aiokafka has no KIP-447 group metadata). Per batch, each partition runs one Kafka
transaction that holds, atomically:
- the outcome event of every command (to `wallet.events`, same partition as the command),
- the transfer legs those outcomes call for (agents/transfer_relay.py) and the hold-expiry releases
  (agents/hold_expiry.py), to `wallet.transfer-legs`,
- commands that arrived on a partition that is not their wallet's, forwarded to their wallet's partition
  in the order they arrived (`_decide_one`),
- poison messages to `wallet.commands.dlq` and answers to web requests (agents/dead_letters.py),
- the consumed offsets of both input topics for that partition, as a record of `processor_offsets_topic`
  (agents/input_positions.py: one produced record, where the group coordinator's offset commit took two
  round trips; the group's offsets are written after the commit, outside it, for lag tools).
The partition's new owner starts the partition's producer before anything else: that fences the previous
owner (a crashed, paused or partitioned zombie) and aborts its open transaction, so nothing it does later
is seen by read_committed readers; its next commit fails and it exits (`ProducerFenced`).
Handover (agents/handover.py): on revoke, the batch in flight finishes; on assign, partitions kept from the
generation before go on with their producer and store, partitions given away stop their producer (the store
stays open as a warm standby, agents/standby.py), and each new partition is paused, fenced, and caught up to
the committed end of `wallet.events` by a task of its own (agents/restore.py) before its first command.
Transactions of different partitions commit in parallel. State lives in `tables.wallet_store.PartitionStore`
(RocksDB), written only after the commit; its changelog is the event log itself.

Per batch the work is: decode, validate, dedupe, decide/evolve in memory (agents/deciding.py), then one send
per output and one RocksDB write batch per partition: no per-command store round trip, one write per
touched wallet. Decisions use the processor's clock, never the producer's `timestamp_ms` (app/identity.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import Counter as Tally

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerFenced

from agents.errors import AgentError
from app import metrics
from app.codec import CodecError, CommandCodec, EventCodec, SchemaRegistry
from app.domain import events as e
from app.domain.limits import Limits
from app.intake import DUPLICATE_COMMAND_CONFLICT, FINGERPRINT_HEADER, accept
from app.replies import REPLY_CONFLICT, REPLY_DECIDED, REPLY_DUPLICATE, REPLY_INVALID, reply_address
from app.kafka import RecordBatches, consumer_options, partition_for, producer_options
from app.settings import Settings
from app.topics import check_partitions
from agents.deciding import decide_command, young_collections
from agents.dead_letters import dead_letter, reply
from agents.gauges import publish_gauges, report_lag
from agents.handover import PartitionHandover, Rebalance, open_local_stores
from agents.input_positions import GroupOffsets, encode_positions, position_key
from agents.hold_expiry import HoldExpiry
from agents.membership import Plan, assignor_for
from agents.retention import RetentionSweep
from agents.standby import StandbyTailer
from agents.transactions import Send, TransactionSlots, use_transaction_retry_backoff
from tables.wallet_store import PartitionStore

log = logging.getLogger("wallet.processor")


class PartitionFenced(AgentError, RuntimeError):
    """Another worker took this partition over while this one was paused or cut off (a zombie).

    Operator action: none; the worker exits and its supervisor restarts it as a new group member.
    """


class Processor(PartitionHandover):
    """Decides commands for the partitions this worker owns in the group; see the module docstring."""

    def __init__(self, settings: Settings, *, member_name: str, table_port: int = 0,
                 registry: SchemaRegistry | None = None) -> None:
        self.settings = settings
        use_transaction_retry_backoff(settings.transaction_retry_backoff_ms)
        self.member_name = member_name
        self.table_port = table_port
        self.limits = Limits(amount_max_major=settings.amount_max_major,
                             holds_open_max=settings.holds_open_max)
        self.registry = registry or SchemaRegistry.for_settings(settings)
        self.commands = CommandCodec(self.registry, settings.commands_topic)
        self.legs = CommandCodec(self.registry, settings.transfer_legs_topic)
        self.events = EventCodec(self.registry, settings.events_topic)
        self.group_id = f"{settings.app_id}-processor"
        self.state_root = settings.state_dir / "processor" / member_name
        self.stores: dict[int, PartitionStore] = {}  # owned and caught up: deciding
        self.local: dict[int, PartitionStore] = {}  # every open local store: owned, standby or warm
        self.producers: dict[int, TransactionSlots] = {}  # the fences held: deciding or catching up
        self.committed: dict[TopicPartition, int] = {}  # input offsets committed for the partitions deciding
        self.plan = Plan({}, {})
        self.standby = StandbyTailer(settings, self.events, self.local)
        self.standby.bind(self._store)
        self._lock = asyncio.Lock()  # a batch and a rebalance never interleave
        self._hold_expiry = HoldExpiry()
        self._retention = RetentionSweep(settings.command_retention_s, settings.retention_sweep_interval_s)
        self._last_now_ms = 0
        self.ready = asyncio.Event()
        self._positions: dict[TopicPartition, int] = {}
        self._sends_total = 0
        self._applied = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._rebalance_started = 0.0
        self.generation = 0  # rebalances so far (agents/handover.py)
        self._settled = asyncio.Event()  # set while no rebalance is in progress: batches may be decided
        self._revoked_in_generation = self._held_in_generation = -1  # group generations (agents/handover.py)
        self._catch_up: asyncio.Task | None = None
        self._tasks: asyncio.TaskGroup | None = None
        # exactly_once: input positions are a record of each transaction (agents/input_positions.py); the
        # at-least-once demonstration commits them through the group after its sends, as before.
        self._positions_in_transaction = settings.processing_guarantee == "exactly_once"

    def batch_applied(self) -> asyncio.Event:
        """An event set when the next batch's state is committed to the stores (for strong reads)."""
        return self._applied

    def _announce_applied(self) -> None:
        self._applied.set()
        self._applied = asyncio.Event()

    def _now_ms(self) -> int:
        """The processor's clock (ms since epoch), never behind a time it already decided at."""
        self._last_now_ms = max(self._last_now_ms, int(time.time() * 1000))
        return self._last_now_ms

    def owns(self, partition: int) -> bool:
        """Whether this worker owns `partition` and its store is caught up (strong reads may be served)."""
        return partition in self.stores

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Process until cancelled; any fault propagates (the worker exits non-zero)."""
        young_collections(self.settings)
        metrics.processor_partitions_total.set(await asyncio.to_thread(check_partitions, self.settings))
        self.local.update(await asyncio.to_thread(open_local_stores, self.state_root, self.settings.partitions))
        assignor = assignor_for(self.member_info, self._on_plan, self.settings.processor_standby_replicas)
        consumer = AIOKafkaConsumer(**consumer_options(
            self.settings, self.group_id, partition_assignment_strategy=(assignor,),
            client_id=f"{self.settings.app_id}-processor:{self.table_port}",
            session_timeout_ms=self.settings.processor_session_timeout_ms,
            heartbeat_interval_ms=self.settings.processor_heartbeat_interval_ms,
            max_poll_interval_ms=self.settings.processor_max_poll_interval_ms,
            group_instance_id=self.member_name if self.settings.processor_static_membership else None))
        self._restore_consumer = AIOKafkaConsumer(**consumer_options(self.settings, None))
        self._consumer = consumer
        self._group_offsets = GroupOffsets(consumer, lambda coroutine: self._tasks.create_task(
            coroutine, name="group-offsets"))
        # at_least_once (the crash test's demonstration only): one plain producer, offsets committed after.
        self._shared_producer = AIOKafkaProducer(**producer_options(self.settings))
        try:
            await self._shared_producer.start()
            await self._restore_consumer.start()
            await consumer.start()
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks  # catch-ups run in it: a failed one ends the worker
                consumer.subscribe([self.settings.commands_topic, self.settings.transfer_legs_topic],
                                   listener=Rebalance(self))
                log.info("processor joining", extra={"member": self.member_name, "group": self.group_id})
                tasks.create_task(self.standby.run(), name="standby")
                tasks.create_task(self._loop(consumer), name="processor-loop")
        finally:
            await consumer.stop()
            await self._restore_consumer.stop()
            for producer in self.producers.values():
                await producer.stop()
            await self._shared_producer.stop()
            self.standby.close()
            for store in self.local.values():
                store.close()

    async def _loop(self, consumer: AIOKafkaConsumer) -> None:
        batch_wait_ms = self.settings.processor_batch_wait_ms
        batch_fill_ms = self.settings.processor_batch_fill_ms
        batch_max = self.settings.processor_batch_size_max
        busy = False  # the previous turn processed a batch
        while True:
            batch = await consumer.getmany(timeout_ms=batch_wait_ms, max_records=batch_max)
            generation = self.generation
            size = sum(len(records) for records in batch.values())
            if busy and batch and size < batch_max and batch_fill_ms:
                # After a batch, the poll returns what the consumer prefetched while that batch ran: only the
                # records that had arrived when it began. The fetch this poll starts brings the rest within a
                # round trip; without it they would wait one more whole batch (decide and commit).
                fill = await consumer.getmany(timeout_ms=batch_fill_ms, max_records=batch_max - size)
                if generation != self.generation:
                    # The fill waited out a rebalance: its records come from the new assignment's positions,
                    # while the batch's are dropped below. Give them back, so they are fetched again.
                    self._give_back(consumer, fill)
                else:
                    for tp, records in fill.items():
                        batch.setdefault(tp, []).extend(records)
            # Schema ids first seen here are resolved off the loop; a registry that does not answer makes the
            # batch wait (with backoff), never sends a well-formed command to the DLQ.
            await self.commands.ensure(record.value for records in batch.values() for record in records)
            await self._settled.wait()  # a rebalance in progress: nothing is decided until it is in place
            async with self._lock:
                # A rebalance while the batch waited (for the registry, the rebalance or the lock) set every
                # position again from committed offsets (eager protocol): the records come again, from this
                # worker or a new owner. Processing them now would write their dead letters and forwards twice.
                if generation != self.generation or not self._settled.is_set():
                    continue
                batch = self._deciding(consumer, batch)
                now_ms, monotonic_s = self._now_ms(), time.monotonic()
                releases = self._hold_expiry.due_releases(self.stores.values(), now_ms, monotonic_s)
                metrics.holds_expired_total.inc(len(releases))
                self._retention.maybe_sweep(self.stores.values(), now_ms, monotonic_s)
                busy = bool(batch or releases)
                if busy:
                    await self._process(batch, releases)
            report_lag(consumer, self._positions, {tp: records[-1].offset + 1 for tp, records in batch.items()})

    def _deciding(self, consumer: AIOKafkaConsumer, batch: dict) -> dict:
        """The batch's records of partitions that are deciding. A paused partition (catching up) yields no
        record; should one arrive anyway, its position goes back to its first record, so it is fetched again
        once the partition is resumed, never skipped."""
        if all(tp.partition in self.stores for tp in batch):
            return batch
        aside = {tp: records for tp, records in batch.items() if tp.partition not in self.stores}
        log.warning("records of a partition not caught up set aside", extra={"partitions": sorted(
            {tp.partition for tp in aside})})
        self._give_back(consumer, aside)
        return {tp: records for tp, records in batch.items() if tp.partition in self.stores}

    @staticmethod
    def _give_back(consumer: AIOKafkaConsumer, records_by_tp: dict) -> None:
        """Set each partition's position back to its first record here: they are fetched again."""
        assigned = consumer.assignment()
        for tp, records in records_by_tp.items():
            if records and tp in assigned:
                consumer.seek(tp, records[0].offset)

    # ------------------------------------------------------------ one batch, one transaction per partition

    async def _process(self, batch: dict, releases: list) -> None:
        started = time.perf_counter()
        now_ms = self._now_ms()
        sends: dict[int, list[Send]] = {}
        for release in releases:
            partition = partition_for(release.wallet_id.encode(), self.settings.partitions)
            sends.setdefault(partition, []).append(Send(self.settings.transfer_legs_topic,
                                                         release.wallet_id.encode(), self.legs.encode(release),
                                                         partition, []))
        decided: list[int] = []  # command timestamps, for the end-to-end latency
        outcomes: Tally = Tally()
        offsets: dict[int, dict[TopicPartition, int]] = {}
        size = 0
        for tp, records in batch.items():
            store = self.stores[tp.partition]
            public = tp.topic == self.settings.commands_topic
            codec = self.commands if public else self.legs
            out = sends.setdefault(tp.partition, [])
            for record in records:
                self._decide_one(store, codec, tp, record, public, now_ms, out, decided, outcomes)
            offsets.setdefault(tp.partition, {})[tp] = records[-1].offset + 1
            size += len(records)
        decide_done = time.perf_counter()
        await asyncio.gather(*(self._commit(partition, out, offsets.get(partition, {}))
                               for partition, out in sends.items()))
        self._announce_applied()
        publish_gauges(self.stores.items())

        now_ms = time.time() * 1000
        for timestamp_ms in decided:
            metrics.end_to_end_seconds.observe(max(0.0, (now_ms - timestamp_ms) / 1000))
        for (kind, outcome), count in outcomes.items():
            metrics.commands_total.labels(kind, outcome).inc(count)
        metrics.processor_batch_size.observe(size)
        metrics.processor_decide_seconds.observe(decide_done - started)
        metrics.processor_batch_seconds.observe(time.perf_counter() - started)

    async def _commit(self, partition: int, sends: list[Send], offsets: dict[TopicPartition, int]) -> None:
        """One transaction of `partition`'s producer: its outputs and its input offsets; then its store."""
        producer = self.producers[partition].next()
        store = self.stores[partition]
        try:
            await producer.begin_transaction()
            batches = RecordBatches(producer)
            for send in sends:
                target = send.partition
                if target is None:
                    target = partition_for(send.key, self.settings.partitions) if send.key is not None else 0
                await batches.add(send.topic, target, send.key, send.value, send.headers)
                self._sends_total += 1
                if self._sends_total == self.settings.fault_kill_after_sends:
                    await batches.submit()
                    await self._die_mid_batch(producer)
            positions = {}
            if offsets and self._positions_in_transaction:
                positions = {**{tp: offset for tp, offset in self.committed.items() if tp.partition == partition},
                             **offsets}
                await batches.add(self.settings.processor_offsets_topic, partition, position_key(partition),
                                  encode_positions(positions), [])
            await batches.submit()
            if offsets and not self._positions_in_transaction:
                await producer.send_offsets_to_transaction(offsets, self.group_id)
            await producer.commit_transaction()
        except ProducerFenced as exc:
            store.discard()
            raise PartitionFenced(f"partition {partition} was taken over by another worker") from exc
        # The batches are delivered: a commit waits for every record of the transaction.
        for (topic, target), offset in batches.last_offsets().items():
            if topic == self.settings.events_topic and target == partition:
                store.changes.events_offset = offset + 1
        store.apply()
        self.committed.update(offsets)
        if positions:
            self._group_offsets.note(positions)

    def _decide_one(self, store: PartitionStore, codec: CommandCodec, tp: TopicPartition, record, public: bool,
                    now_ms: int, sends: list[Send], decided: list[int], outcomes: Tally) -> None:
        command = None
        reply_to = reply_address(record.headers, self.settings.reply_partitions) if public else None
        try:
            command = accept(codec, record.key, record.value, public=public)
            home = partition_for(command.wallet_id.encode(), self.settings.partitions)
            if home != tp.partition:
                # Any partitioner upstream: the command goes to its wallet's partition, in arrival order.
                metrics.commands_forwarded_total.labels(tp.topic).inc()
                sends.append(Send(tp.topic, command.wallet_id.encode(), record.value, home,
                                   list(record.headers or ())))
                return
            decision = decide_command(store, command, now_ms, self.limits, self.events.encode)
        except CodecError as error:
            sends.append(dead_letter(self.settings.dlq_topic, tp, record, error, command))
            if reply_to is not None:
                result = REPLY_CONFLICT if error.code == DUPLICATE_COMMAND_CONFLICT else REPLY_INVALID
                sends.append(reply(self.settings.reply_topic, reply_to, command.command_id if command is not None else "", result,
                                         None, [("error.code", error.code.encode()),
                                                ("error.detail", error.detail.encode())]))
            return
        if decision.duplicate:
            metrics.commands_duplicate_total.inc()
            if reply_to is not None:
                sends.append(reply(self.settings.reply_topic, reply_to, command.command_id, REPLY_DUPLICATE, decision.first_outcome))
            return
        headers = [(FINGERPRINT_HEADER, decision.digest.encode())]
        key = command.wallet_id.encode()
        for event, value in zip(decision.events, decision.values):
            sends.append(Send(self.settings.events_topic, key, value, tp.partition, headers))
            outcome = event.code if isinstance(event, (e.CommandRejected, e.TransferCreditRejected)) else "applied"
            outcomes[(type(command).__name__, outcome)] += 1
        for leg in decision.legs:
            sends.append(Send(self.settings.transfer_legs_topic, leg.wallet_id.encode(), self.legs.encode(leg),
                               None, []))
        if reply_to is not None:
            sends.append(reply(self.settings.reply_topic, reply_to, command.command_id, REPLY_DECIDED, decision.values[-1]))
        decided.append(command.timestamp_ms)

    @staticmethod
    async def _die_mid_batch(producer) -> None:
        """The crash test's failpoint (Settings.fault_kill_after_sends): SIGKILL with half a batch sent."""
        await producer.flush()
        log.warning("failpoint: killing the processor mid-batch")
        os.kill(os.getpid(), signal.SIGKILL)
