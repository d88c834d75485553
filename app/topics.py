"""Topics of the ledger, their creation, and the start-up check that co-partitioned topics agree."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import FoundationError
from app.settings import Settings

# Wait for topic metadata at start-up; the broker answers in milliseconds when it is up.
ADMIN_TIMEOUT_S = 15.0
# Segment size of the processor's positions topic: the active segment is never compacted.
POSITIONS_SEGMENT_BYTES = 64 * 1024 * 1024


class PartitionCountMismatch(FoundationError, RuntimeError):
    """Co-partitioned topics have different partition counts, so a wallet's commands and its events
    would live on different partitions.

    Operator action: give every topic in the message the same partition count (WALLET_PARTITIONS),
    or recreate them, then restart the worker.
    """


class TopicMissing(FoundationError, RuntimeError):
    """A topic the worker needs does not exist. Operator action: run `wallet init`."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    config: dict[str, str]
    copartitioned: bool = True
    partitions: int | None = None  # None: settings.partitions (every co-partitioned topic)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    forever = {"retention.ms": "-1", "cleanup.policy": "delete"}
    return [
        TopicSpec(settings.commands_topic, {"retention.ms": str(7 * 24 * 3600 * 1000)}),
        TopicSpec(settings.transfer_legs_topic, {"retention.ms": str(7 * 24 * 3600 * 1000)}),
        # The source of truth: kept forever, read with read_committed.
        TopicSpec(settings.events_topic, forever),
        # The processor's input positions: only the last committed record of each partition matters. Small
        # segments, so compaction keeps it small (a record per partition per transaction).
        TopicSpec(settings.processor_offsets_topic, {"cleanup.policy": "compact",
                                                     "segment.bytes": str(POSITIONS_SEGMENT_BYTES)}),
        # Poison is kept until an operator re-drives or discards it.
        TopicSpec(settings.dlq_topic, forever, copartitioned=False),
        # Events a sink's store refused, kept until an operator has fixed the cause and rebuilt the read model.
        TopicSpec(settings.sink_dlq_topic, forever, copartitioned=False),
        # Answers to the HTTP API's requests: read only while a request waits.
        TopicSpec(settings.reply_topic, {"retention.ms": str(settings.reply_retention_ms)}, copartitioned=False,
                  partitions=settings.reply_partitions),
    ]


def _admin(settings: Settings):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap})


def create_topics(settings: Settings) -> list[str]:
    """Create the missing topics with `settings.partitions` partitions; return the names created."""
    from confluent_kafka.admin import NewTopic

    admin = _admin(settings)
    existing = set(admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)
    new = [NewTopic(spec.name, spec.partitions or settings.partitions, settings.topic_replication_factor,
                    config=spec.config)
           for spec in topic_specs(settings) if spec.name not in existing]
    if not new:
        return []
    for name, future in admin.create_topics(new, operation_timeout=ADMIN_TIMEOUT_S).items():
        try:
            future.result()
        except Exception as exc:  # TOPIC_ALREADY_EXISTS from a concurrent init is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return [topic.topic for topic in new]


def require_topic(settings: Settings, name: str) -> None:
    """Raise TopicMissing unless topic `name` exists."""
    topic = _admin(settings).list_topics(topic=name, timeout=ADMIN_TIMEOUT_S).topics.get(name)
    if topic is None or topic.error is not None:
        raise TopicMissing(f"topic {name} does not exist; run `wallet init`")


def check_partitions(settings: Settings) -> int:
    """Raise unless every co-partitioned topic exists with the same partition count; return it."""
    metadata = _admin(settings).list_topics(timeout=ADMIN_TIMEOUT_S)
    counts: dict[str, int] = {}
    for spec in topic_specs(settings):
        topic = metadata.topics.get(spec.name)
        if topic is None or topic.error is not None:
            raise TopicMissing(f"topic {spec.name} does not exist; run `wallet init`")
        if spec.copartitioned:
            counts[spec.name] = len(topic.partitions)
    if len(set(counts.values())) != 1 or settings.partitions not in counts.values():
        listed = ", ".join(f"{name}={count}" for name, count in counts.items())
        raise PartitionCountMismatch(
            f"co-partitioned topics disagree on partition counts ({listed}; "
            f"WALLET_PARTITIONS={settings.partitions}): a wallet's commands and events must share a partition")
    return settings.partitions
