"""Kafka client settings shared by every process, with the options we rely on spelled out."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.errors import FoundationError
from app.murmur2 import murmur2
from app.settings import Settings

# Keys whose partition is remembered; wallets repeat (a dict lookup is still cheaper than the compiled murmur2).
PARTITION_CACHE_SIZE_MAX = 200_000
_partition_cache: dict[tuple[bytes, int], int] = {}

# Kafka's request timeout for our clients; a broker that does not answer within it is a fault.
REQUEST_TIMEOUT_MS = 30_000


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Java clients, aiokafka and our confluent producers (murmur2) choose for `key`."""
    found = _partition_cache.get((key, partitions))
    if found is None:
        if len(_partition_cache) >= PARTITION_CACHE_SIZE_MAX:
            _partition_cache.clear()
        found = _partition_cache[(key, partitions)] = (murmur2(key) & 0x7FFFFFFF) % partitions
    return found


class RecordBatches:
    """Records grouped per topic partition and handed to the producer as whole record batches.

    `producer.send()` costs a future and an accumulator lookup per record; `send_batch` builds the batch in
    place. Inside a transaction both are equally atomic. After `submit()` and the commit, `last_offsets()`
    gives the offset of the last record written to each partition.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._open: dict[tuple[str, int], tuple[object, int]] = {}
        self._sent: list[tuple[str, int, int, object]] = []  # topic, partition, records, future
        self.records = 0

    async def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
                  headers: list[tuple[str, bytes]]) -> None:
        builder, count = self._open.get((topic, partition)) or (self._producer.create_batch(), 0)
        if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
            await self._send(topic, partition, builder, count)
            builder, count = self._producer.create_batch(), 0
            if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError(f"a record for {topic} is larger than the producer's max_batch_size")
        self._open[(topic, partition)] = (builder, count + 1)
        self.records += 1

    async def _send(self, topic: str, partition: int, builder: object, count: int) -> None:
        future = await self._producer.send_batch(builder, topic, partition=partition)
        self._sent.append((topic, partition, count, future))

    async def submit(self) -> None:
        """Hand every open batch to the producer."""
        open_batches, self._open = self._open, {}
        for (topic, partition), (builder, count) in open_batches.items():
            await self._send(topic, partition, builder, count)

    def last_offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> offset of the last record sent there (futures must be resolved)."""
        last: dict[tuple[str, int], int] = {}
        for topic, partition, count, future in self._sent:
            offset = future.result().offset + count - 1
            last[(topic, partition)] = max(offset, last.get((topic, partition), -1))
        return last


def producer_options(settings: Settings, **extra: object) -> dict[str, object]:
    """aiokafka producer options: idempotent, acks from all replicas, small linger to batch."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "enable_idempotence": True,  # no duplicates from the producer's own retries
        "acks": "all",
        "linger_ms": 2,  # a few ms of batching buys throughput at a cost well under our latency budget
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": REQUEST_TIMEOUT_MS,
        **extra,
    }


def consumer_options(settings: Settings, group_id: str | None, **extra: object) -> dict[str, object]:
    """aiokafka consumer options: manual commits, committed reads only, start from the beginning."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,  # offsets move only with our transaction or after the store commit
        "isolation_level": "read_committed",  # never see events of an aborted transaction
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "fetch_max_wait_ms": settings.consumer_fetch_wait_max_ms,
        "request_timeout_ms": REQUEST_TIMEOUT_MS,
        **extra,
    }


def confluent_producer_config(settings: Settings, **extra: object) -> dict[str, object]:
    """confluent-kafka (librdkafka) producer config that partitions like the Java client."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        # librdkafka's default is CRC32; murmur2 puts a wallet's commands where its state lives.
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        **extra,
    }


# How long `read_to_end` may take by default; each fetch waits at most READ_FETCH_WAIT_MS for records.
READ_TO_END_TIMEOUT_S = 120.0
READ_FETCH_WAIT_MS = 500
READ_FETCH_RECORDS_MAX = 10_000


class TopicReadIncomplete(FoundationError):
    """A topic could not be read to its end: slower than the caller's bound, or larger than its limit."""


async def read_to_end(settings: Settings, topic: str, *, timeout_s: float = READ_TO_END_TIMEOUT_S,
                      records_max: int | None = None) -> list:
    """Every committed record of `topic` (read_committed), from its beginning to the end offsets it had when
    the call began, ordered by partition and offset. Raises TopicReadIncomplete past `timeout_s` seconds or
    `records_max` records."""
    consumer = AIOKafkaConsumer(**consumer_options(settings, None))
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list = []
        deadline = time.monotonic() + timeout_s
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            if time.monotonic() > deadline:
                raise TopicReadIncomplete(f"could not read {topic} to its end within {timeout_s:.0f} s")
            batch = await consumer.getmany(timeout_ms=READ_FETCH_WAIT_MS, max_records=READ_FETCH_RECORDS_MAX)
            for recs in batch.values():
                records.extend(recs)
            if records_max is not None and len(records) > records_max:
                raise TopicReadIncomplete(f"{topic} holds more than {records_max} records")
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()
