"""`wallet rebuild`: drop the read models (MySQL tables, Redis wallet hashes) and project them again from
`wallet.events`, the source of truth, through the sinks' own writers in large batches.

Safe while the sinks run: every write is idempotent and version-guarded, so a live sink writing newer
events during the rebuild leaves each wallet at its newest version. Readers see empty or partial read
models until the rebuild finishes (the API then falls back or answers 404/503): run it in a quiet window.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.codec import EventCodec, SchemaRegistry
from app.intake import FINGERPRINT_HEADER
from app.kafka import consumer_options
from app.settings import Settings
from wallet.errors import EntryPointError

# Events per store write: large, because a rebuild is a catch-up (see docs/BENCHMARKS.md, Sink).
REBUILD_BATCH_EVENTS = 20_000
# Reading the log must progress: no new record for this long while short of the end is a fault.
READ_STALL_TIMEOUT_S = 60.0
# Redis keys deleted per UNLINK call.
REDIS_DELETE_BATCH = 1_000
READ_MODEL_TABLES = ("ledger_entries", "command_outcomes", "transfers", "wallets")


class LogReadStalled(EntryPointError, RuntimeError):
    """`wallet.events` stopped returning records before its end offsets.

    Operator action: check the broker (`wallet stack status`) and run the command again."""


@dataclass(frozen=True)
class RebuildResult:
    events: int
    wallets: int
    seconds: float


async def read_event_batches(settings: Settings, *, batch_events: int = REBUILD_BATCH_EVENTS,
                             registry: SchemaRegistry | None = None, on_progress=None) -> AsyncIterator[list]:
    """Every committed record of `wallet.events` up to its end offsets at the call, as lists of
    `agents.projection.ProjectedEvent`, in log order per partition. `on_progress(done, total)` after each
    batch (`total` counts offsets, an upper bound under transactions) and once at the end (done, done)."""
    from agents.projection import ProjectedEvent

    codec = await asyncio.to_thread(EventCodec, registry or SchemaRegistry.for_settings(settings),
                                    settings.events_topic)  # registers: blocking
    consumer = AIOKafkaConsumer(**consumer_options(settings, None, max_partition_fetch_bytes=8 * 1024 * 1024,
                                                   fetch_max_bytes=64 * 1024 * 1024))
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(settings.events_topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(settings.events_topic) or set()
        tps = [TopicPartition(settings.events_topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        total = sum(ends[tp] - starts[tp] for tp in tps)
        done = 0
        pending = {tp for tp in tps if ends[tp] > starts[tp]}
        last_progress = time.monotonic()
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=500, max_records=batch_events)
            await codec.ensure(record.value for records in fetched.values() for record in records)
            items = []
            for tp, records in fetched.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    items.append(ProjectedEvent(codec.decode(record.value), dict(record.headers or ()).get(
                        FINGERPRINT_HEADER, b"").decode(), tp.partition, record.offset))
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            if items:
                last_progress = time.monotonic()
                done += len(items)
                yield items
                if on_progress is not None:
                    on_progress(done, total)
            elif time.monotonic() - last_progress > READ_STALL_TIMEOUT_S:
                raise LogReadStalled(f"{settings.events_topic}: no records for {READ_STALL_TIMEOUT_S:.0f} s "
                                     f"with {total - done} still to read")
        if on_progress is not None:
            # The offsets include transaction markers, so `total` is an upper bound: close at the real count.
            on_progress(done, done)
    finally:
        await consumer.stop()


def progress_bar(label: str, stream=sys.stderr, width: int = 30):
    """A text progress bar on `stream`: call it with (done, total)."""
    def show(done: int, total: int) -> None:
        share = done / total if total else 1.0
        filled = int(width * share)
        stream.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} events "
                     f"({share:.0%})")
        stream.flush()
    return show


async def truncate_read_models(settings: Settings) -> None:
    """Empty the MySQL read-model tables (primary; the replica follows) and delete Redis `wallet:*`."""
    from sqlalchemy import text

    from readside.mysql import make_engine
    from readside.redis import WALLET_KEY_PREFIX, make_client

    engine = make_engine(settings.mysql_dsn)
    try:
        async with engine.begin() as conn:
            for table in READ_MODEL_TABLES:
                await conn.execute(text(f"TRUNCATE TABLE {table}"))
    finally:
        await engine.dispose()
    client = make_client(settings.redis_url)
    try:
        keys: list[str] = []
        async for key in client.scan_iter(match=f"{WALLET_KEY_PREFIX}*", count=REDIS_DELETE_BATCH):
            keys.append(key)
            if len(keys) >= REDIS_DELETE_BATCH:
                await client.unlink(*keys)
                keys.clear()
        if keys:
            await client.unlink(*keys)
    finally:
        await client.aclose()


async def rebuild(settings: Settings, *, show_progress: bool = True,
                  batch_events: int = REBUILD_BATCH_EVENTS) -> RebuildResult:
    """Truncate both read models and project every event of `wallet.events` into them again."""
    from agents import mysql_sink, redis_sink

    started = time.monotonic()
    await truncate_read_models(settings)
    mysql_writer = await mysql_sink.create_writer(settings)
    redis_writer = await redis_sink.create_writer(settings)
    events = 0
    wallet_ids: set[str] = set()
    try:
        async for items in read_event_batches(settings, batch_events=batch_events,
                                              on_progress=progress_bar("rebuild") if show_progress else None):
            await mysql_writer(items)
            await redis_writer(items)
            events += len(items)
            wallet_ids.update(item.event.wallet_id for item in items)
    finally:
        await mysql_writer.engine.dispose()
        await redis_writer.client.aclose()
    if show_progress:
        sys.stderr.write("\n")
    return RebuildResult(events=events, wallets=len(wallet_ids), seconds=time.monotonic() - started)


def main(settings: Settings) -> int:
    import asyncio

    result = asyncio.run(rebuild(settings))
    print(f"rebuild: {result.events:,} events of {result.wallets:,} wallets projected into MySQL and Redis "
          f"in {result.seconds:.1f} s")
    return 0
