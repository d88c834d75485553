"""The command processor: the one exactly-once part of the ledger.

One processor instance owns a fixed set of partitions (`p % instances == instance`) of the
co-partitioned topics `wallet.commands` and `wallet.transfer-legs`. Per batch it runs one Kafka
transaction that holds, atomically:
- the outcome event of every command (to `wallet.events`, same partition as the command),
- the transfer legs those outcomes call for (agents/transfer_relay.py) and the hold-expiry releases
  (agents/hold_expiry.py), to `wallet.transfer-legs`,
- commands that arrived on a partition that is not their wallet's, forwarded to their wallet's partition
  in the order they arrived (agents/routing.py),
- poison messages (to `wallet.commands.dlq`, with the reason in headers),
- the consumed offsets of both input topics.
The transactional id is `<app_id>-processor-<instance>`: a restarted instance fences its predecessor,
whose open transaction is aborted, so nothing it did is seen by read_committed readers.

State lives in `tables.wallet_store.PartitionStore` (RocksDB) and is written only after the commit.
Its changelog is the event log itself (see the store's docstring); at start-up each store is caught
up from `wallet.events`.

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
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app import metrics
from app.codec import CodecError, CommandCodec, EventCodec, SchemaRegistry
from app.domain import events as e
from app.domain.limits import Limits
from app.intake import DUPLICATE_COMMAND_CONFLICT, FINGERPRINT_HEADER, accept
from app.replies import (REPLY_CONFLICT, REPLY_DECIDED, REPLY_DUPLICATE, REPLY_INVALID, REPLY_RESULT_HEADER,
                         REPLY_TOKEN_HEADER, reply_address)
from app.kafka import RecordBatches, consumer_options, partition_for, producer_options
from app.settings import Settings
from app.topics import check_partitions
from agents.deciding import decide_command
from agents.gauges import publish_gauges
from agents.hold_expiry import HoldExpiry
from agents.restore import restore
from agents.retention import RetentionSweep
from tables.wallet_store import PartitionStore

log = logging.getLogger("wallet.processor")


class _AtLeastOnce:
    """The producer surface `_process` uses, without transactions: sends, then commits offsets.

    Only for showing what exactly-once buys (the crash test); never a production setting.
    """

    def __init__(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer) -> None:
        self._producer = producer
        self._consumer = consumer
        self._offsets: dict = {}
        self._futures: list = []

    async def begin_transaction(self) -> None:
        self._offsets, self._futures = {}, []

    def create_batch(self):
        return self._producer.create_batch()

    async def send_batch(self, batch, topic: str, *, partition: int):
        future = await self._producer.send_batch(batch, topic, partition=partition)
        self._futures.append(future)
        return future

    async def flush(self) -> None:
        await self._producer.flush()

    async def send_offsets_to_transaction(self, offsets: dict, group_id: str) -> None:
        self._offsets = offsets

    async def commit_transaction(self) -> None:
        await asyncio.gather(*self._futures)
        if self._offsets:
            await self._consumer.commit(self._offsets)


def owned_partitions(partitions: int, instance: int, instances: int) -> list[int]:
    if not 0 <= instance < instances:
        raise ValueError(f"instance {instance} is not in 0..{instances - 1}")
    return [p for p in range(partitions) if p % instances == instance]


@dataclass(frozen=True, slots=True)
class _Send:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    headers: list[tuple[str, bytes]]


class Processor:
    """Decides commands for the partitions of one instance; see the module docstring."""

    def __init__(self, settings: Settings, *, instance: int = 0, instances: int = 1,
                 registry: SchemaRegistry | None = None) -> None:
        self.settings = settings
        self.instance = instance
        self.limits = Limits(amount_max_major=settings.amount_max_major,
                             holds_open_max=settings.holds_open_max)
        self.registry = registry or SchemaRegistry(settings.registry_url)
        self.commands = CommandCodec(self.registry, settings.commands_topic)
        self.legs = CommandCodec(self.registry, settings.transfer_legs_topic)
        self.events = EventCodec(self.registry, settings.events_topic)
        self.partitions = owned_partitions(settings.partitions, instance, instances)
        self.group_id = f"{settings.app_id}-processor"
        self.transactional_id = f"{settings.app_id}-processor-{instance}"
        self.stores: dict[int, PartitionStore] = {}
        self._hold_expiry = HoldExpiry()
        self._retention = RetentionSweep(settings.command_retention_s, settings.retention_sweep_interval_s)
        self._last_now_ms = 0
        self.ready = asyncio.Event()
        self._positions: dict[TopicPartition, int] = {}
        self._sends_total = 0
        self._applied = asyncio.Event()

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

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Process until cancelled; any fault propagates (the worker exits non-zero)."""
        await asyncio.to_thread(check_partitions, self.settings)
        state_root = self.settings.state_dir / "processor"
        self.stores = {p: PartitionStore(state_root / f"p{p}") for p in self.partitions}
        transactional = self.settings.processing_guarantee == "exactly_once"
        # A transaction that starts right after the previous commit often hears CONCURRENT_TRANSACTIONS
        # until the broker has written the commit markers (KAFKA-5477); aiokafka then sleeps
        # retry_backoff_ms (default 100 ms) before retrying, which puts 100-200 ms on random commands.
        producer = AIOKafkaProducer(**producer_options(
            self.settings, transactional_id=self.transactional_id if transactional else None,
            retry_backoff_ms=self.settings.transaction_retry_backoff_ms))
        consumer = AIOKafkaConsumer(**consumer_options(self.settings, self.group_id))
        try:
            # Starting the transactional producer fences an earlier instance with the same id and
            # aborts its open transaction, so the events log is settled before we restore from it.
            await producer.start()
            await self._restore_all()
            await consumer.start()
            consumer.assign([TopicPartition(topic, p) for p in self.partitions
                             for topic in (self.settings.commands_topic, self.settings.transfer_legs_topic)])
            log.info("processor ready", extra={"instance": self.instance, "partitions": self.partitions})
            self.ready.set()
            await self._loop(consumer, producer if transactional else _AtLeastOnce(producer, consumer))
        finally:
            await consumer.stop()
            await producer.stop()
            for store in self.stores.values():
                store.close()

    async def _loop(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        batch_wait_ms = self.settings.processor_batch_wait_ms
        batch_max = self.settings.processor_batch_size_max
        while True:
            batch = await consumer.getmany(timeout_ms=batch_wait_ms, max_records=batch_max)
            now_ms, monotonic_s = self._now_ms(), time.monotonic()
            releases = self._hold_expiry.due_releases(self.stores.values(), now_ms, monotonic_s)
            metrics.holds_expired_total.inc(len(releases))
            self._retention.maybe_sweep(self.stores.values(), now_ms, monotonic_s)
            if batch or releases:
                sends = [_Send(self.settings.transfer_legs_topic, release.wallet_id.encode(),
                               self.legs.encode(release), None, []) for release in releases]
                await self._process(producer, batch, sends)
            self._report_lag(consumer, {tp: records[-1].offset + 1 for tp, records in batch.items()})

    # ------------------------------------------------------------ one batch, one transaction

    async def _process(self, producer: AIOKafkaProducer, batch: dict, releases: list[_Send]) -> None:
        started = time.perf_counter()
        now_ms = self._now_ms()
        sends: list[_Send] = list(releases)
        decided: list[int] = []  # command timestamps, for the end-to-end latency
        outcomes: Tally = Tally()
        offsets: dict[TopicPartition, int] = {}
        size = 0
        for tp, records in batch.items():
            store = self.stores[tp.partition]
            public = tp.topic == self.settings.commands_topic
            codec = self.commands if public else self.legs
            for record in records:
                self._decide_one(store, codec, tp, record, public, now_ms, sends, decided, outcomes)
            offsets[tp] = records[-1].offset + 1
            size += len(records)
        decide_done = time.perf_counter()

        await producer.begin_transaction()
        batches = RecordBatches(producer)
        partitions = self.settings.partitions
        for send in sends:
            partition = send.partition
            if partition is None:
                partition = partition_for(send.key, partitions) if send.key is not None else 0
            await batches.add(send.topic, partition, send.key, send.value, send.headers)
            self._sends_total += 1
            if self._sends_total == self.settings.fault_kill_after_sends:
                await batches.submit()
                await self._die_mid_batch(producer)
        await batches.submit()
        if offsets:
            await producer.send_offsets_to_transaction(offsets, self.group_id)
        await producer.commit_transaction()
        # The batches are delivered: a commit waits for every record of the transaction.
        for (topic, partition), offset in batches.last_offsets().items():
            if topic == self.settings.events_topic:
                self.stores[partition].changes.events_offset = offset + 1
        for store in self.stores.values():
            store.apply()
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

    def _decide_one(self, store: PartitionStore, codec: CommandCodec, tp: TopicPartition, record, public: bool,
                    now_ms: int, sends: list[_Send], decided: list[int], outcomes: Tally) -> None:
        command = None
        reply_to = reply_address(record.headers, self.settings.reply_partitions) if public else None
        try:
            command = accept(codec, record.key, record.value, public=public)
            home = partition_for(command.wallet_id.encode(), self.settings.partitions)
            if home != tp.partition:
                # Any partitioner upstream: the command goes to its wallet's partition, in arrival order.
                metrics.commands_forwarded_total.labels(tp.topic).inc()
                sends.append(_Send(tp.topic, command.wallet_id.encode(), record.value, home,
                                   list(record.headers or ())))
                return
            decision = decide_command(store, command, now_ms, self.limits, self.events.encode)
        except CodecError as error:
            sends.append(self._dlq(tp, record, error, command))
            if reply_to is not None:
                result = REPLY_CONFLICT if error.code == DUPLICATE_COMMAND_CONFLICT else REPLY_INVALID
                sends.append(self._reply(reply_to, command.command_id if command is not None else "", result,
                                         None, [("error.code", error.code.encode()),
                                                ("error.detail", error.detail.encode())]))
            return
        if decision.duplicate:
            metrics.commands_duplicate_total.inc()
            if reply_to is not None:
                sends.append(self._reply(reply_to, command.command_id, REPLY_DUPLICATE, decision.first_outcome))
            return
        headers = [(FINGERPRINT_HEADER, decision.digest.encode())]
        key = command.wallet_id.encode()
        for event, value in zip(decision.events, decision.values):
            sends.append(_Send(self.settings.events_topic, key, value, tp.partition, headers))
            outcome = event.code if isinstance(event, (e.CommandRejected, e.TransferCreditRejected)) else "applied"
            outcomes[(type(command).__name__, outcome)] += 1
        for leg in decision.legs:
            sends.append(_Send(self.settings.transfer_legs_topic, leg.wallet_id.encode(), self.legs.encode(leg),
                               None, []))
        if reply_to is not None:
            sends.append(self._reply(reply_to, command.command_id, REPLY_DECIDED, decision.values[-1]))
        decided.append(command.timestamp_ms)

    def _reply(self, reply_to: tuple[int, bytes], command_id: str, result: str, outcome: bytes | None,
               headers: list[tuple[str, bytes]] = ()) -> _Send:
        """The answer to a web request: the outcome event's wire bytes (or None) on the asker's partition."""
        partition, token = reply_to
        return _Send(self.settings.reply_topic, command_id.encode(), outcome, partition,
                     [(REPLY_RESULT_HEADER, result.encode()), (REPLY_TOKEN_HEADER, token), *headers])

    @staticmethod
    async def _die_mid_batch(producer) -> None:
        """The crash test's failpoint (Settings.fault_kill_after_sends): SIGKILL with half a batch sent."""
        await producer.flush()
        log.warning("failpoint: killing the processor mid-batch")
        os.kill(os.getpid(), signal.SIGKILL)

    def _dlq(self, tp: TopicPartition, record, error: CodecError, command) -> _Send:
        metrics.dlq_messages_total.labels(error.code).inc()
        log.warning("poison message to DLQ", extra={
            "reason": error.code, "topic": tp.topic, "partition": tp.partition, "offset": record.offset,
            "wallet_id": record.key.decode(errors="replace") if record.key is not None else None,
            "command_id": command.command_id if command is not None else None})
        headers = [("error.code", error.code.encode()), ("error.detail", error.detail.encode()),
                   ("source.topic", tp.topic.encode()), ("source.partition", str(tp.partition).encode()),
                   ("source.offset", str(record.offset).encode())]
        return _Send(self.settings.dlq_topic, record.key, record.value, None, headers)

    def _report_lag(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """Lag = last stable offset seen by the last fetch minus our next offset, per partition."""
        self._positions.update(offsets)
        for tp, position in self._positions.items():
            end = consumer.last_stable_offset(tp)
            if end is not None:
                metrics.processor_consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, end - position))

    # ------------------------------------------------------------ restore

    async def _restore_all(self) -> None:
        consumer = AIOKafkaConsumer(**consumer_options(self.settings, None))
        await consumer.start()
        try:
            for partition, store in self.stores.items():
                await restore(consumer, self.settings.events_topic, self.events, partition, store,
                              self.settings.command_retention_s)
            publish_gauges(self.stores.items())
        finally:
            await consumer.stop()
