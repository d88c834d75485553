"""The at-least-once loop every projection of `wallet.events` shares (MySQL sink, Redis sink).

Per batch: decode, hand the events to the store writer, and commit the Kafka offsets only after the
store committed. A store fault is retried with capped exponential backoff while the consumer holds its
position (it fetches nothing new), so an outage delays the projection and loses nothing; the writers are
idempotent, so a batch written twice (crash between store commit and offset commit) changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError

from app import metrics
from app.codec import EventCodec, SchemaRegistry
from app.domain.events import EventBase
from app.intake import FINGERPRINT_HEADER
from app.kafka import consumer_options
from app.settings import Settings

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


Writer = Callable[[list[ProjectedEvent]], Awaitable[None]]


class StoreUnavailable(Exception):
    """A read-model store (MySQL, Redis) refused or dropped a write; the sink retries."""


async def run_projection(settings: Settings, sink: str, write: Writer, *, registry: SchemaRegistry,
                         ready: asyncio.Event | None = None) -> None:
    """Project `wallet.events` through `write` until cancelled. Consumer group `<app_id>-<sink>-sink`."""
    log = logging.getLogger(f"wallet.sink.{sink}")
    codec = EventCodec(registry, settings.events_topic)
    consumer = AIOKafkaConsumer(settings.events_topic,
                                **consumer_options(settings, f"{settings.app_id}-{sink}-sink"))
    await consumer.start()
    if ready is not None:
        ready.set()
    writes = 0
    prepare = getattr(write, "prepare", None)
    execute = getattr(write, "execute", write) if prepare is not None else write
    # Batches are written while the next ones are fetched, decoded and prepared, so the store's work
    # overlaps with this process's CPU work (docs/BENCHMARKS.md, Sink). A writer whose writes commute
    # (idempotent, version-guarded rows) may ask for more than one write in flight, each in a store
    # transaction of its own. Offsets are committed in log order all the same: a batch's only after its
    # own write and every earlier batch's write finished. At most that many batches are read ahead.
    writes_in_flight_max = getattr(write, "writes_in_flight_max", 1)
    if not 1 <= writes_in_flight_max <= WRITES_IN_FLIGHT_LIMIT:
        raise ValueError(f"writes_in_flight_max {writes_in_flight_max} is not within 1..{WRITES_IN_FLIGHT_LIMIT}")
    in_flight: deque[tuple[asyncio.Task, dict, list[ProjectedEvent], float]] = deque()

    def decode(batch: dict) -> tuple[list[ProjectedEvent], Any]:
        items = [
            ProjectedEvent(codec.decode(record.value), dict(record.headers or ()).get(
                FINGERPRINT_HEADER, b"").decode(), tp.partition, record.offset)
            for tp, records in batch.items() for record in records
        ]
        # A writer with `prepare` (CPU: rows, SQL) and `execute` (I/O) gets its batch prepared here.
        return items, prepare(items) if items and prepare is not None else items

    async def finish(write_task: asyncio.Task, offsets: dict, items: list[ProjectedEvent], started: float) -> None:
        nonlocal writes
        await write_task
        writes += 1
        if writes == (settings.fault_sink_kill_after_writes or -1):
            os.kill(os.getpid(), signal.SIGKILL)  # failpoint: store committed, offsets not
        metrics.sink_batch_seconds.labels(sink).observe(time.perf_counter() - started)
        metrics.sink_events_total.labels(sink).inc(len(items))
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
            # Decoding and preparing are CPU work (most of this process's time): in a worker thread, so
            # the event loop keeps feeding the writes in flight their statements and reading their
            # results (it gets the GIL back within the interpreter's switch interval, 5 ms).
            items, prepared = await asyncio.to_thread(decode, batch) if batch else ([], None)
            # Oldest first: a full pipeline, an idle topic (nothing left to overlap with) or a write that
            # has finished frees its slot and commits its offsets.
            while in_flight and (len(in_flight) >= writes_in_flight_max or not items or in_flight[0][0].done()):
                await finish(*in_flight.popleft())
            if items:
                offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
                in_flight.append((asyncio.create_task(_write_with_retry(execute, prepared, settings, sink, log)),
                                  offsets, items, time.perf_counter()))
    finally:
        for write_task, *_ in in_flight:
            write_task.cancel()
        await asyncio.gather(*(write_task for write_task, *_ in in_flight), return_exceptions=True)
        await consumer.stop()


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


