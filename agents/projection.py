"""The at-least-once loop every projection of `wallet.events` shares (MySQL sink, Redis sink).

Per batch: decode, hand the events to the store writer, and commit the Kafka offsets only after the
store committed (in log order, also when a writer has more than one batch in flight). A store fault is
retried with capped exponential backoff while the consumer holds its position (it fetches nothing beyond
the batches already in flight), so an outage delays the projection and loses nothing; the writers are
idempotent, so a batch written twice (crash between store commit and offset commit) changes nothing.

Failure domain of one event: when the store refuses a batch's data (StoreRefused: a value too long, a
constraint, a trigger), the batch is written again in halves, in log order, down to the single events the
store refuses; those go to the sink DLQ (`Settings.sink_dlq_topic`, SinkDeadLetters) with the reason, and
the sink goes on. Offsets move only once every event of the batch is in the store or in the sink DLQ.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError

from agents.errors import AgentError
from app import metrics
from app.codec import EventCodec, SchemaRegistry
from app.domain.events import EventBase
from app.intake import FINGERPRINT_HEADER
from app.kafka import consumer_options, producer_options
from app.settings import Settings
# The read side's one fault (a store unreachable, or failing a write for a reason of its own: a connection, a
# deadlock, a missing table): the sink retries the same write.
from readside.errors import StoreUnavailable

# First retry delay after a store fault; doubles up to Settings.sink_retry_backoff_max_s.
RETRY_BACKOFF_FIRST_S = 0.1
# The most writes in flight a writer may ask for: each holds a read-ahead batch in memory and a store
# connection.
WRITES_IN_FLIGHT_LIMIT = 4


@dataclass(frozen=True, slots=True)
class ProjectedEvent:
    event: EventBase
    fingerprint: str
    partition: int
    offset: int
    # The record as it is in wallet.events (what the sink DLQ keeps); None where nothing dead-letters it.
    key: bytes | None = None
    value: bytes | None = None


Writer = Callable[[list[ProjectedEvent]], Awaitable[None]]


@dataclass(slots=True)
class _Write:
    """A batch whose store write is in flight."""

    task: asyncio.Task
    offsets: dict  # TopicPartition -> next offset, committed once this and every earlier write finished
    items: list[ProjectedEvent]
    started: float  # time.perf_counter() seconds
    wallet_ids: frozenset[str]



class StoreRefused(AgentError):
    """A read-model store refused the data of a write (a value the column cannot hold, a constraint, a
    trigger): the same events fail the same way every time. `reason` names the error (the driver's
    exception class: a metric label), `detail` says what the store said. The projection isolates the
    events at fault and sends them to the sink DLQ."""

    # How much of the store's message the DLQ header and the log keep.
    DETAIL_CHARS_MAX = 1000

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:self.DETAIL_CHARS_MAX]


# Headers of a sink DLQ record (the command DLQ's names, wallet/dlq.py reads both, plus the sink's name).
SINK_HEADER = "sink"


class SinkDeadLetters:
    """The sink DLQ: events a store refused, key and value as they are in wallet.events, with headers
    `sink`, `error.code` (the reason), `error.detail`, `source.topic`, `source.partition`, `source.offset`.

    Operator action for its records: docs/OPERATIONS.md, WalletSinkDeadLetters. They are never re-driven
    into wallet.events (that would record the events twice); fix the cause and rebuild the read model."""

    def __init__(self, settings: Settings, sink: str) -> None:
        self.settings = settings
        self.sink = sink
        self.producer: AIOKafkaProducer | None = None
        self.log = logging.getLogger(f"wallet.sink.{sink}")

    async def start(self) -> None:
        from app.topics import require_topic

        # Refuse to start without the topic: a refused event must have somewhere to go (`wallet init`).
        await asyncio.to_thread(require_topic, self.settings, self.settings.sink_dlq_topic)
        self.producer = AIOKafkaProducer(**producer_options(self.settings))
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def send(self, item: ProjectedEvent, error: StoreRefused) -> None:
        """Write `item` to the sink DLQ and wait for the broker's acknowledgement."""
        headers = [(SINK_HEADER, self.sink), ("error.code", error.reason), ("error.detail", error.detail),
                   ("source.topic", self.settings.events_topic), ("source.partition", str(item.partition)),
                   ("source.offset", str(item.offset))]
        sent = await self.producer.send(self.settings.sink_dlq_topic, key=item.key, value=item.value,
                                        headers=[(name, value.encode()) for name, value in headers])
        await sent
        metrics.sink_dlq_events_total.labels(self.sink, error.reason).inc()
        self.log.error("the store refused an event; it went to the sink DLQ", extra={
            "sink": self.sink, "reason": error.reason, "error": error.detail, "wallet_id": item.event.wallet_id,
            "partition": item.partition, "offset": item.offset})


async def run_projection(settings: Settings, sink: str, write: Writer, *, registry: SchemaRegistry,
                         ready: asyncio.Event | None = None, dead_letters: SinkDeadLetters | None = None) -> None:
    """Project `wallet.events` through `write` until cancelled. Consumer group `<app_id>-<sink>-sink`.
    Events the store refuses go to `dead_letters` (default: the sink DLQ topic)."""
    prepare = getattr(write, "prepare", None)
    execute = getattr(write, "execute", write) if prepare is not None else write
    # Batches are written while the next ones are fetched, decoded and prepared, so the store's work
    # overlaps with this process's CPU work (docs/BENCHMARKS.md, Sink). A writer whose writes of
    # *different wallets* commute (rows by key, transfers guarded by status) may ask for more than one
    # write in flight, each in a store transaction of its own. A wallet's own rows are not order-free (its
    # owner, currency and status come from its older events), so a batch starts only when no write in
    # flight has a wallet in common with it: each wallet's events still reach the store in log order.
    # Offsets are committed in log order too: a batch's only after its own write and every earlier
    # batch's write finished. At most `writes_in_flight_max` batches are read ahead.
    writes_in_flight_max = getattr(write, "writes_in_flight_max", 1)
    if not 1 <= writes_in_flight_max <= WRITES_IN_FLIGHT_LIMIT:
        raise ValueError(f"writes_in_flight_max {writes_in_flight_max} is not within 1..{WRITES_IN_FLIGHT_LIMIT}")
    log = logging.getLogger(f"wallet.sink.{sink}")
    codec = await asyncio.to_thread(EventCodec, registry, settings.events_topic)  # registers: blocking
    consumer = AIOKafkaConsumer(settings.events_topic,
                                **consumer_options(settings, f"{settings.app_id}-{sink}-sink"))
    dead_letters = dead_letters or SinkDeadLetters(settings, sink)
    try:
        await dead_letters.start()
        await consumer.start()
    except BaseException:  # a failure or a stop signal during start-up: close what was opened
        await consumer.stop()
        await dead_letters.stop()
        raise
    if ready is not None:
        ready.set()
    writes = 0
    in_flight: deque[_Write] = deque()  # oldest first
    loop = asyncio.get_running_loop()
    decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{sink}-sink-decode")

    def decode(batch: dict) -> tuple[list[ProjectedEvent], Any, frozenset[str]]:
        items = [
            ProjectedEvent(codec.decode(record.value), dict(record.headers or ()).get(
                FINGERPRINT_HEADER, b"").decode(), tp.partition, record.offset, record.key, record.value)
            for tp, records in batch.items() for record in records
        ]
        # A writer with `prepare` (CPU: rows, SQL) and `execute` (I/O) gets its batch prepared here.
        prepared = prepare(items) if items and prepare is not None else items
        return items, prepared, frozenset(item.event.wallet_id for item in items)

    async def prepare_on_thread(items: list[ProjectedEvent]) -> Any:
        return await loop.run_in_executor(decoder, prepare, items) if prepare is not None else items

    def must_wait(wallet_ids: frozenset[str] | None) -> bool:
        """Whether the oldest write in flight must finish before a batch of `wallet_ids` (None: no batch)
        may start: the pipeline is full, a wallet is in both, or the oldest is done (commit its offsets)."""
        return (wallet_ids is None or len(in_flight) >= writes_in_flight_max or in_flight[0].task.done()
                or any(not wallet_ids.isdisjoint(write.wallet_ids) for write in in_flight))

    async def finish(write: _Write) -> None:
        nonlocal writes
        items, offsets = write.items, write.offsets
        dead_lettered = await write.task
        writes += 1
        if writes == (settings.fault_sink_kill_after_writes or -1):
            os.kill(os.getpid(), signal.SIGKILL)  # failpoint: store committed, offsets not
        metrics.sink_batch_seconds.labels(sink).observe(time.perf_counter() - write.started)
        metrics.sink_events_total.labels(sink).inc(len(items) - dead_lettered)
        newest_ms = max(item.event.timestamp_ms for item in items)
        metrics.sink_lag_seconds.labels(sink).set(max(0.0, time.time() - newest_ms / 1000))
        try:
            await consumer.commit(offsets)
        except CommitFailedError:
            # A rebalance moved the partitions; their new owner re-reads and re-writes idempotently.
            log.info("offset commit lost to a rebalance", extra={"sink": sink})
        lag = 0
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp)
            position = offsets.get(tp)
            if end is not None and position is not None:
                lag += max(0, end - position)
        metrics.sink_lag_events.labels(sink).set(lag)

    try:
        while True:
            batch = await consumer.getmany(timeout_ms=settings.sink_batch_wait_ms,
                                           max_records=settings.sink_batch_size_max)
            await codec.ensure(r.value for records in batch.values() for r in records)
            # Decoding and preparing are CPU work (most of this process's time): on a thread of their
            # own, so the event loop keeps feeding the writes in flight their statements and reading
            # their results (it gets the GIL back within the interpreter's switch interval, 5 ms).
            items, prepared, wallet_ids = (await loop.run_in_executor(decoder, decode, batch) if batch
                                           else ([], None, None))
            # Oldest first, so offsets move in log order; an idle topic (no batch) finishes them all.
            while in_flight and must_wait(wallet_ids):
                await finish(in_flight.popleft())
            if items:
                in_flight.append(_Write(
                    asyncio.create_task(_write_isolating(execute, prepare_on_thread, items, prepared, settings, sink,
                                                         log, dead_letters)),
                    {tp: records[-1].offset + 1 for tp, records in batch.items()}, items, time.perf_counter(),
                    wallet_ids))
    finally:
        for write in in_flight:
            write.task.cancel()
        await asyncio.gather(*(write.task for write in in_flight), return_exceptions=True)
        decoder.shutdown(wait=False, cancel_futures=True)
        try:
            await consumer.stop()
        finally:
            await dead_letters.stop()


async def _write_isolating(write: Callable[[Any], Awaitable[None]], prepare: Callable[[list], Awaitable[Any]],
                           items: list[ProjectedEvent], prepared: Any, settings: Settings, sink: str,
                           log: logging.Logger, dead_letters: SinkDeadLetters, *, whole_batch: bool = True) -> int:
    """Write a batch; if the store refuses its data, write it again in halves, in log order, down to the
    single events it refuses, and send those to the sink DLQ. Returns how many went there.

    A refused write changed nothing (one transaction; the Redis writer's are idempotent), so writing the
    halves in order is writing the batch, less its refused events. Bisection bounds the extra writes by
    about 2 x refused x log2(batch size) (28 for one bad event in a batch of 5,000)."""
    try:
        await _write_with_retry(write, prepared, settings, sink, log)
        return 0
    except StoreRefused as refused:
        if len(items) == 1:
            await dead_letters.send(items[0], refused)
            return 1
        if whole_batch:
            log.warning("the store refused a batch; isolating the events at fault", extra={
                "sink": sink, "events": len(items), "reason": refused.reason, "error": refused.detail})
    middle = len(items) // 2
    dead_lettered = 0
    for part in (items[:middle], items[middle:]):
        dead_lettered += await _write_isolating(write, prepare, part, await prepare(part), settings, sink, log,
                                                dead_letters, whole_batch=False)
    return dead_lettered


async def _write_with_retry(write: Callable[[Any], Awaitable[None]], items: Any, settings: Settings, sink: str,
                            log: logging.Logger) -> None:
    delay_s = RETRY_BACKOFF_FIRST_S
    while True:
        try:
            await write(items)
            return
        except StoreUnavailable as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # The driver turned our cancellation into an error ("Cancelled during execution"):
                # stop as asked instead of retrying forever in a worker that is shutting down.
                raise asyncio.CancelledError() from exc
            metrics.sink_retries_total.labels(sink).inc()
            log.warning("store write failed; retrying", extra={"sink": sink, "error": str(exc),
                                                                "retry_in_s": delay_s})
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, settings.sink_retry_backoff_max_s)


