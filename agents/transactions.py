"""What one partition's transaction carries, and the producer behind it.

`Send` is one record a batch outputs (an event, a leg, a release, a forwarded command, a dead letter, a
reply). `AtLeastOnce` is the same producer surface without a transaction, for the crash test's
demonstration of what exactly-once buys (docs/DESIGN.md section 3); never a production setting.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.producer import sender as aiokafka_sender


@dataclass(frozen=True, slots=True)
class Send:
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
