"""The ceiling the processor is measured against: consume, decode, write one event each, transactionally.

No table, no dedupe, no decide, no hash chain: what any exactly-once Python loop on aiokafka pays for
Kafka and Avro alone. `python -m bench.raw_loop <instance> <instances>` with WALLET_* settings.
"""

from __future__ import annotations

import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.codec import CommandCodec, EventCodec, SchemaRegistry
from app.domain import events as e
from app.domain.hashing import GENESIS_HASH
from app.kafka import RecordBatches, consumer_options, producer_options
from app.settings import Settings
from agents.deciding import young_collections


async def raw_loop(settings: Settings, instance: int, instances: int) -> None:
    young_collections(settings)  # the processor's collector setting, so the two differ only by the ledger
    registry = SchemaRegistry.for_settings(settings)
    commands = CommandCodec(registry, settings.commands_topic)
    events = EventCodec(registry, settings.events_topic)
    group = f"{settings.app_id}-raw"
    producer = AIOKafkaProducer(**producer_options(settings, transactional_id=f"{settings.app_id}-raw-{instance}"))
    consumer = AIOKafkaConsumer(**consumer_options(settings, group))
    await producer.start()
    await consumer.start()
    consumer.assign([TopicPartition(settings.commands_topic, p) for p in range(settings.partitions)
                     if p % instances == instance])
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=settings.processor_batch_wait_ms,
                                           max_records=settings.processor_batch_size_max)
            if not batch:
                continue
            await commands.ensure(record.value for records in batch.values() for record in records)
            await producer.begin_transaction()
            # The same batched sends as the processor, so the ratio measures the ledger's own work.
            batches = RecordBatches(producer)
            for tp, records in batch.items():
                for record in records:
                    command = commands.decode(record.value)
                    event = e.CommandRejected(
                        wallet_id=command.wallet_id, command_id=command.command_id, timestamp_ms=command.timestamp_ms,
                        version=0, balance_after_minor=0, available_after_minor=0, held_after_minor=0,
                        hash=GENESIS_HASH, command_kind=type(command).__name__, code="RAW", detail="")
                    await batches.add(settings.events_topic, tp.partition, record.key, events.encode(event), [])
            await batches.submit()
            await producer.send_offsets_to_transaction(
                {tp: records[-1].offset + 1 for tp, records in batch.items()}, group)
            await producer.commit_transaction()
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    try:
        asyncio.run(raw_loop(Settings.from_env(), int(sys.argv[1]), int(sys.argv[2])))
    except KeyboardInterrupt:
        pass
