"""Kafka client settings shared by every process, with the options we rely on spelled out."""

from __future__ import annotations

from aiokafka.partitioner import murmur2

from app.settings import Settings

# Kafka's request timeout for our clients; a broker that does not answer within it is a fault.
REQUEST_TIMEOUT_MS = 30_000


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Java clients, aiokafka and our confluent producers (murmur2) choose for `key`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


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
