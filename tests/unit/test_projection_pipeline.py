"""The projection loop with more than one write in flight: offsets still move in log order, each batch's
only after its own write and every earlier one finished, and a wallet's batches are never written at once;
events the store refuses go to the sink DLQ one by one while the rest is written (no services: a fake
consumer, a fake writer, a fake sink DLQ)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from aiokafka import TopicPartition

from agents import projection
from agents.projection import StoreRefused, run_projection
from readside.errors import StoreUnavailable
from app.codec import EventCodec
from app.domain import events as e
from app.settings import Settings

TOPIC = "pipeline.events"
TP = TopicPartition(TOPIC, 0)
BATCHES = 4
EVENTS_PER_BATCH = 3


class Record:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.key, self.value, self.headers = offset, None, value, ()


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


class FakeDeadLetters:
    """Collects what the projection sends to the sink DLQ."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []  # (offset, reason)
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, item, error: StoreRefused) -> None:
        self.sent.append((item.offset, error.reason))


class RefusingWriter:
    """A store that refuses any write holding an event at one of `bad_offsets` (and so writes nothing of
    it, like one transaction), and otherwise records the offsets it wrote."""

    writes_in_flight_max = 2

    def __init__(self, bad_offsets: set[int]) -> None:
        self.bad_offsets = bad_offsets
        self.written: list[int] = []
        self.attempts = 0

    def prepare(self, items: list) -> list:
        return items

    async def execute(self, items: list) -> None:
        self.attempts += 1
        refused = sorted(self.bad_offsets & {item.offset for item in items})
        if refused:
            raise StoreRefused("DataError", f"row at offset {refused[0]} does not fit")
        self.written += [item.offset for item in items]


async def _project_all(monkeypatch, wallet_every_batches: int, writer=None,
                       dead_letters: FakeDeadLetters | None = None):
    monkeypatch.setattr(projection, "AIOKafkaConsumer", FakeConsumer)
    monkeypatch.setattr(FakeConsumer, "wallet_every_batches", wallet_every_batches)
    monkeypatch.setattr(projection, "RETRY_BACKOFF_FIRST_S", 0.01)
    settings = replace(Settings(), events_topic=TOPIC, sink_batch_wait_ms=10)
    writer = writer or OutOfOrderWriter()
    task = asyncio.create_task(run_projection(settings, "pipeline", writer, registry=None,
                                              dead_letters=dead_letters or FakeDeadLetters()))
    try:
        for _ in range(200):
            await asyncio.sleep(0.02)
            if len(FakeConsumer.last.commits) == BATCHES or task.done():
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


async def test_events_the_store_refuses_go_to_the_sink_dlq_and_the_rest_is_written_in_log_order(monkeypatch) -> None:
    bad = {4, 9, 10}
    dead_letters = FakeDeadLetters()
    writer = await _project_all(monkeypatch, wallet_every_batches=BATCHES, writer=RefusingWriter(bad),
                                dead_letters=dead_letters)
    everything = range(BATCHES * EVENTS_PER_BATCH)
    assert dead_letters.sent == [(offset, "DataError") for offset in sorted(bad)]
    assert writer.written == [offset for offset in everything if offset not in bad]
    # Every batch's offsets were committed: the sink went on past the refused events.
    assert FakeConsumer.last.commits == [EVENTS_PER_BATCH * (n + 1) for n in range(BATCHES)]
    assert dead_letters.started and dead_letters.stopped


async def test_a_batch_with_one_refused_event_costs_a_bounded_number_of_writes(monkeypatch) -> None:
    writer = RefusingWriter({1})
    await _project_all(monkeypatch, wallet_every_batches=1, writer=writer)
    # The failed batch of 3, then [0] and [1, 2], then [1] and [2]: 5; the three other batches: 1 each.
    assert writer.attempts == 5 + BATCHES - 1


async def test_an_error_that_is_neither_a_store_fault_nor_a_refusal_stops_the_projection(monkeypatch) -> None:
    class BrokenWriter(RefusingWriter):
        async def execute(self, items: list) -> None:
            raise KeyError("a bug in the writer")

    monkeypatch.setattr(projection, "AIOKafkaConsumer", FakeConsumer)
    dead_letters = FakeDeadLetters()
    settings = replace(Settings(), events_topic=TOPIC, sink_batch_wait_ms=10)
    with pytest.raises(KeyError):
        await asyncio.wait_for(run_projection(settings, "pipeline", BrokenWriter(set()), registry=None,
                                              dead_letters=dead_letters), timeout=10)
    assert dead_letters.sent == [] and dead_letters.stopped
