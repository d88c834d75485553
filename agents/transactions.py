"""What one partition's transaction carries, and the producers behind it.

`Send` is one record a batch outputs (an event, a leg, a release, a forwarded command, a dead letter, a
reply). `TransactionSlots` are a partition's transactional producers, used in turn (below). `AtLeastOnce` is
the same producer surface without a transaction, for the crash test's demonstration of what exactly-once
buys (docs/DESIGN.md section 3); never a production setting.

**Transaction slots.** After a commit the broker still writes the transaction's commit markers for a few
milliseconds; until it has, the same transactional id cannot start its next transaction (the broker answers
CONCURRENT_TRANSACTIONS, KAFKA-5477) and a busy partition waits on every commit. A partition's owner
therefore holds `processor_transaction_slots` transactional producers and starts each transaction on the
next one, while the previous one's markers are written. What keeps this exactly-once:
- **Order.** A partition's transaction starts only after the previous one's commit was acknowledged (the
  processor commits a partition's batches one after another), so its records follow the previous ones in
  every output partition, and read_committed readers see them in that order.
- **Input offsets never go back.** Each transaction writes the input positions after its batch as a record
  of the partition's positions topic (agents/input_positions.py), and a new owner reads the last committed
  one back. A transaction's record follows the previous transaction's in that partition, since it begins
  only after the previous commit was acknowledged, whatever order the markers arrive in. (The at-least-once
  mode commits through the group, whose coordinator likewise keeps the commit appended last.)
- **Fencing.** Starting a transactional producer (InitProducerId) fences the id's previous holder and
  settles its open transaction. A new owner fences every id a partition's owner may have used,
  `PROCESSOR_TRANSACTION_SLOTS_MAX` of them, whatever its own setting is: it starts the ones it uses and stops
  the others once fenced, so a zombie of a version with more slots is fenced too.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.producer import sender as aiokafka_sender

from app.kafka import producer_options
from app.settings import PROCESSOR_TRANSACTION_SLOTS_MAX, Settings


class Send(NamedTuple):
    """One record of a batch's transaction. A named tuple: built a few times per command, a third of the cost
    of a frozen dataclass."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None  # None: the key's murmur2 partition
    headers: list[tuple[str, bytes]]


def use_transaction_retry_backoff(backoff_ms: int) -> None:
    """Make aiokafka wait `backoff_ms` (not its fixed 20 ms) before retrying the first AddPartitionsToTxn of a
    transaction that the broker answered CONCURRENT_TRANSACTIONS.

    The broker answers that while it still writes the previous transaction's commit markers (KAFKA-5477), so
    nearly every transaction of a busy partition meets it once. aiokafka applies the producer's
    `retry_backoff_ms` (Settings.transaction_retry_backoff_ms) to every other retry, but this one case uses
    the module constant `BACKOFF_OVERRIDE` (aiokafka 0.14, producer/sender.py). Process-wide: only the
    processor's transactional producers can meet it.
    """
    aiokafka_sender.BACKOFF_OVERRIDE = backoff_ms / 1000


class AtLeastOnce:
    """The transactional producer's surface without a transaction: sends, then commits offsets."""

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

    async def stop(self) -> None:
        """The shared producer outlives a partition."""


def transactional_id(app_id: str, partition: int, slot: int) -> str:
    """The transactional id of `slot` of `partition` (slot 0 keeps the one-producer design's id)."""
    base = f"{app_id}-processor-p{partition}"
    return base if slot == 0 else f"{base}-s{slot}"


class TransactionSlots:
    """A partition's producers, used in turn, one transaction at a time (see the module docstring)."""

    def __init__(self, producers: list) -> None:
        self._producers = producers
        self._next = 0

    def next(self):
        """The producer the partition's next transaction runs on."""
        producer = self._producers[self._next]
        self._next = (self._next + 1) % len(self._producers)
        return producer

    async def stop(self) -> None:
        await asyncio.gather(*(producer.stop() for producer in self._producers))


async def start_transaction_slots(settings: Settings, partition: int) -> TransactionSlots:
    """Fence every transactional id of `partition` and keep the first `processor_transaction_slots` started."""
    # Retries of a transaction request the broker is not ready for wait transaction_retry_backoff_ms, not
    # aiokafka's default 100 ms, which would put 100-200 ms on random commands.
    producers = [AIOKafkaProducer(**producer_options(
        settings, transactional_id=transactional_id(settings.app_id, partition, slot),
        retry_backoff_ms=settings.transaction_retry_backoff_ms)) for slot in range(PROCESSOR_TRANSACTION_SLOTS_MAX)]
    used = settings.processor_transaction_slots
    try:
        await asyncio.gather(*(producer.start() for producer in producers))
    except BaseException:
        await asyncio.gather(*(producer.stop() for producer in producers), return_exceptions=True)
        raise
    await asyncio.gather(*(producer.stop() for producer in producers[used:]))
    return TransactionSlots(producers[:used])
