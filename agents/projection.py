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
    # One batch is written while the next is fetched and decoded: the store's round trips overlap with
    # this process's CPU work (docs/BENCHMARKS.md, Sink). Offsets of a batch are committed only after its
    # write finished, and only one write is ever in flight, so at most one batch is read ahead.
    in_flight: tuple[asyncio.Task, dict, list[ProjectedEvent], float] | None = None

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
            items = [
                ProjectedEvent(codec.decode(record.value), dict(record.headers or ()).get(
                    FINGERPRINT_HEADER, b"").decode(), tp.partition, record.offset)
                for tp, records in batch.items() for record in records
            ]
            # A writer with `prepare` (CPU: rows, SQL) and `execute` (I/O) gets its next batch prepared
            # while the previous one executes.
            prepared = prepare(items) if items and prepare is not None else items
            if in_flight is not None:
                current, in_flight = in_flight, None
                await finish(*current)
            if items:
                offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
                in_flight = (asyncio.create_task(_write_with_retry(execute, prepared, settings, sink, log)),
                             offsets, items, time.perf_counter())
    finally:
        if in_flight is not None:
            in_flight[0].cancel()
            await asyncio.gather(in_flight[0], return_exceptions=True)
        await consumer.stop()


async def _write_with_retry(write: Callable[[Any], Awaitable[None]], items: Any, settings: Settings, sink: str,
                            log: logging.Logger) -> None:
    delay_s = RETRY_BACKOFF_FIRST_S
    while True:
        try:
            await write(items)
            return
        except StoreUnavailable as exc:
            metrics.sink_retries_total.labels(sink).inc()
            log.warning("store write failed; retrying", extra={"sink": sink, "error": str(exc),
                                                                "retry_in_s": delay_s})
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, settings.sink_retry_backoff_max_s)


