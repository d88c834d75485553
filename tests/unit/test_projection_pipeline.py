"""The projection loop with more than one write in flight: offsets still move in log order, each batch's
only after its own write and every earlier one finished, and a wallet's batches are never written at once
(no services: a fake consumer, a fake writer)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from aiokafka import TopicPartition

from agents import projection
from agents.projection import StoreUnavailable, run_projection
from app.codec import EventCodec
from app.domain import events as e
from app.settings import Settings

TOPIC = "pipeline.events"
TP = TopicPartition(TOPIC, 0)
BATCHES = 4
EVENTS_PER_BATCH = 3


class Record:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.value, self.headers = offset, value, ()


class FakeConsumer:
    """Hands out BATCHES batches of one partition, then nothing; records every offset commit. Batch n holds
    events of wallet `w<n // wallet_every_batches>`."""

    wallet_every_batches = 1

    def __init__(self, *_args, **_kwargs) -> None:
        codec = EventCodec(None, TOPIC)
        records = [Record(offset, codec.encode(e.Deposited(
            wallet_id=f"w{offset // EVENTS_PER_BATCH // self.wallet_every_batches}", command_id=f"c{offset}", timestamp_ms=1_000 + offset, version=offset + 1,
            balance_after_minor=offset + 1, available_after_minor=offset + 1, held_after_minor=0, hash="0" * 64,
            amount_minor=1, currency="EUR", reference="", description="")))
            for offset in range(BATCHES * EVENTS_PER_BATCH)]
        self.batches = [records[start:start + EVENTS_PER_BATCH]
                        for start in range(0, len(records), EVENTS_PER_BATCH)]
        self.commits: list[int] = []
        FakeConsumer.last = self

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        if not self.batches:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        return {TP: self.batches.pop(0)}

    async def commit(self, offsets: dict) -> None:
        self.commits.append(offsets[TP])

    def assignment(self) -> set:
        return {TP}

    def last_stable_offset(self, tp: TopicPartition) -> int:
        return BATCHES * EVENTS_PER_BATCH


class OutOfOrderWriter:
    """Two writes in flight; the first batch's write is the slowest and fails once before it succeeds."""

    writes_in_flight_max = 2

    def __init__(self) -> None:
        self.finished: list[int] = []  # last offset of each batch, in the order its write finished
        self.failed_once = False
        self.writing: set[str] = set()
        self.wallet_overlaps = 0

    def prepare(self, items: list) -> list:
        return items

    async def execute(self, items: list) -> None:
        wallet_ids = {item.event.wallet_id for item in items}
        self.wallet_overlaps += bool(wallet_ids & self.writing)
        self.writing |= wallet_ids
        try:
            await self._write(items)
        finally:
            self.writing -= wallet_ids

    async def _write(self, items: list) -> None:
        last = items[-1].offset
        if last == EVENTS_PER_BATCH - 1:
            await asyncio.sleep(0.2)
            if not self.failed_once:
                self.failed_once = True
                raise StoreUnavailable("first write of the first batch fails")
        # Every commit so far must be of a batch whose write finished.
        assert all(offset - 1 in self.finished for offset in FakeConsumer.last.commits)
        self.finished.append(last)


async def _project_all(monkeypatch, wallet_every_batches: int) -> OutOfOrderWriter:
    monkeypatch.setattr(projection, "AIOKafkaConsumer", FakeConsumer)
    monkeypatch.setattr(FakeConsumer, "wallet_every_batches", wallet_every_batches)
    monkeypatch.setattr(projection, "RETRY_BACKOFF_FIRST_S", 0.01)
    settings = replace(Settings(), events_topic=TOPIC, sink_batch_wait_ms=10)
    writer = OutOfOrderWriter()
    task = asyncio.create_task(run_projection(settings, "pipeline", writer, registry=None))
    try:
        for _ in range(200):
            await asyncio.sleep(0.02)
            if len(FakeConsumer.last.commits) == BATCHES:
                break
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return writer


async def test_offsets_are_committed_in_log_order_after_every_earlier_write_when_writes_overlap(monkeypatch) -> None:
    writer = await _project_all(monkeypatch, wallet_every_batches=1)
    # The second batch's write finished first, but its offset waited for the first batch.
    assert writer.finished[0] == 2 * EVENTS_PER_BATCH - 1
    assert FakeConsumer.last.commits == [EVENTS_PER_BATCH * (n + 1) for n in range(BATCHES)]


async def test_batches_with_a_wallet_in_common_are_written_one_after_the_other_in_log_order(monkeypatch) -> None:
    writer = await _project_all(monkeypatch, wallet_every_batches=BATCHES)
    assert writer.wallet_overlaps == 0
    assert writer.finished == [EVENTS_PER_BATCH * (n + 1) - 1 for n in range(BATCHES)]
    assert FakeConsumer.last.commits == [EVENTS_PER_BATCH * (n + 1) for n in range(BATCHES)]


async def test_a_writer_asking_for_more_writes_in_flight_than_the_bound_is_refused() -> None:
    writer = OutOfOrderWriter()
    writer.writes_in_flight_max = projection.WRITES_IN_FLIGHT_LIMIT + 1
    with pytest.raises(ValueError):
        await run_projection(Settings(), "pipeline", writer, registry=None)
