"""Client spike: a transactional consume -> produce loop with aiokafka and with confluent-kafka, in one run.

The processor's Kafka work without the processor: read a backlog of N records from one topic, write one
record per input to another, and commit each batch in a transaction together with the consumed offsets.
- aiokafka 0.14: `getmany`, whole record batches (`create_batch`/`send_batch`, as agents/processor.py does),
  `send_offsets_to_transaction(offsets, group_id)` (offsets by group id: no KIP-447 group metadata).
- confluent-kafka (librdkafka): `consume`, `produce` per record, and KIP-447's
  `send_offsets_to_transaction(offsets, consumer.consumer_group_metadata())`.
Both read committed, with the processor's fetch wait (`consumer_fetch_wait_max_ms`), batch size
(`processor_batch_size_max`) and transaction retry back-off (`transaction_retry_backoff_ms`), on fresh topics
of their own on the local broker (loopback only), and alternate for ROUNDS rounds so that the machine's other
load falls on both alike. records/s = N / (time of the last commit - time the first batch arrived). A second
run with batches of SMALL_BATCH records measures what one transaction costs (transactions/s), which is what a
command pays at a steady low rate.

    python -m bench.client_spike [--records 200000] [--rounds 3] [--small-batch 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid

from app.settings import Settings

# The backlog: records of about the size of an Avro command, keyed like wallets.
RECORDS_DEFAULT = 200_000
VALUE_BYTES = 200
KEYS = 100_000
ROUNDS = 3
# The second run: small batches, so the figure is the cost of a transaction (what a command's latency pays at a
# steady low rate), not of the records.
SMALL_BATCH = 20
SMALL_BATCH_RECORDS = 4_000
# Bound of one loop's run (a loop that stalls fails the spike instead of hanging it).
LOOP_TIMEOUT_S = 600.0
# Bound of admin calls and of flushing the backlog.
ADMIN_TIMEOUT_S = 30.0
FLUSH_TIMEOUT_S = 120.0


def _create_topics(settings: Settings, names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(name, settings.partitions, 1) for name in names]).values():
        future.result(ADMIN_TIMEOUT_S)


def _delete_topics(settings: Settings, names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.delete_topics(names, operation_timeout=ADMIN_TIMEOUT_S).values():
        future.result(ADMIN_TIMEOUT_S)


def _fill(settings: Settings, topic: str, records: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20, "enable.idempotence": True,
                         "partitioner": "murmur2_random"})
    value = bytes(range(256))[:VALUE_BYTES]
    for i in range(records):
        while True:
            try:
                producer.produce(topic, key=f"w{i % KEYS:06d}".encode(), value=value)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(FLUSH_TIMEOUT_S):
        raise RuntimeError(f"{topic}: the backlog was not delivered within {FLUSH_TIMEOUT_S:.0f} s")


async def _aiokafka_loop(settings: Settings, source: str, target: str, records: int, batch_max: int) -> float:
    """aiokafka: the loop over `records` input records; the seconds from the first batch to the last commit."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from app.kafka import consumer_options, producer_options

    group = f"spike-aiokafka-{uuid.uuid4().hex[:6]}"
    consumer = AIOKafkaConsumer(source, **consumer_options(settings, group))
    producer = AIOKafkaProducer(**producer_options(settings, transactional_id=f"{group}-tx",
                                                   retry_backoff_ms=settings.transaction_retry_backoff_ms))
    await consumer.start()
    await producer.start()
    try:
        done = 0
        started = None
        while done < records:
            batch = await consumer.getmany(timeout_ms=settings.consumer_fetch_wait_max_ms,
                                           max_records=batch_max)
            if not batch:
                continue
            started = started or time.perf_counter()
            await producer.begin_transaction()
            offsets = {}
            for tp, rows in batch.items():
                builder = producer.create_batch()
                for row in rows:
                    if builder.append(key=row.key, value=row.value, timestamp=None) is None:
                        await producer.send_batch(builder, target, partition=tp.partition)
                        builder = producer.create_batch()
                        builder.append(key=row.key, value=row.value, timestamp=None)
                await producer.send_batch(builder, target, partition=tp.partition)
                offsets[tp] = rows[-1].offset + 1
                done += len(rows)
            await producer.send_offsets_to_transaction(offsets, group)
            await producer.commit_transaction()
        return time.perf_counter() - started
    finally:
        await producer.stop()
        await consumer.stop()


def _confluent_loop(settings: Settings, source: str, target: str, records: int, batch_max: int) -> float:
    """confluent-kafka with KIP-447: the same loop; the seconds from the first batch to the last commit."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

    group = f"spike-confluent-{uuid.uuid4().hex[:6]}"
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed",
                         "fetch.wait.max.ms": settings.consumer_fetch_wait_max_ms,
                         "max.partition.fetch.bytes": 4 * 1024 * 1024})
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "transactional.id": f"{group}-tx",
                         "enable.idempotence": True, "acks": "all", "linger.ms": 2,
                         "retry.backoff.ms": settings.transaction_retry_backoff_ms})
    try:
        producer.init_transactions(ADMIN_TIMEOUT_S)
        consumer.subscribe([source])
        done = 0
        started = None
        while done < records:
            messages = consumer.consume(num_messages=batch_max,
                                        timeout=settings.consumer_fetch_wait_max_ms / 1000)
            messages = [m for m in messages if m.error() is None]
            if not messages:
                continue
            started = started or time.perf_counter()
            producer.begin_transaction()
            offsets: dict[int, int] = {}
            for message in messages:
                while True:
                    try:
                        producer.produce(target, key=message.key(), value=message.value(),
                                         partition=message.partition())
                        break
                    except BufferError:
                        producer.poll(0.01)
                offsets[message.partition()] = message.offset() + 1
            done += len(messages)
            producer.send_offsets_to_transaction([TopicPartition(source, p, o) for p, o in offsets.items()],
                                                 consumer.consumer_group_metadata(), ADMIN_TIMEOUT_S)
            producer.commit_transaction(ADMIN_TIMEOUT_S)
        return time.perf_counter() - started
    except KafkaException as exc:
        raise RuntimeError(f"confluent-kafka loop failed: {exc}") from exc
    finally:
        consumer.close()


def _measure(settings: Settings, source: str, outputs: list[str], records: int, batch_max: int,
             rounds: int) -> dict[str, list[float]]:
    """records/s of each loop over the first `records` of `source`, alternating, `rounds` times each."""
    rates: dict[str, list[float]] = {"aiokafka": [], "confluent": []}
    for round_ in range(rounds):
        seconds = asyncio.run(asyncio.wait_for(
            _aiokafka_loop(settings, source, outputs.pop(), records, batch_max), LOOP_TIMEOUT_S))
        rates["aiokafka"].append(records / seconds)
        seconds = _confluent_loop(settings, source, outputs.pop(), records, batch_max)
        rates["confluent"].append(records / seconds)
        print(f"batch {batch_max}, round {round_ + 1}: aiokafka {rates['aiokafka'][-1]:,.0f}/s, "
              f"confluent-kafka {rates['confluent'][-1]:,.0f}/s", flush=True)
    return rates


def run(settings: Settings, records: int, rounds: int, small_batch: int, small_records: int) -> dict:
    """The loops at the processor's batch size (throughput), then at `small_batch` (per-transaction cost)."""
    tag = f"spike-{uuid.uuid4().hex[:6]}"
    source, outputs = f"{tag}.in", [f"{tag}.out-{i}" for i in range(4 * rounds)]
    _create_topics(settings, [source, *outputs])
    try:
        _fill(settings, source, records)
        large = _measure(settings, source, list(outputs[:2 * rounds]), records, settings.processor_batch_size_max,
                         rounds)
        small = _measure(settings, source, list(outputs[2 * rounds:]), small_records, small_batch, rounds)
    finally:
        _delete_topics(settings, [source, *outputs])
    result = {"records": records, "batch_max": settings.processor_batch_size_max, "partitions": settings.partitions,
              "rounds": rounds}
    for label, rates, batch in (("", large, settings.processor_batch_size_max), ("small_batch_", small, small_batch)):
        aiokafka_per_s, confluent_per_s = statistics.median(rates["aiokafka"]), statistics.median(rates["confluent"])
        result.update({f"{label}aiokafka_per_s": round(aiokafka_per_s), f"{label}confluent_per_s": round(confluent_per_s),
                       f"{label}confluent_to_aiokafka": round(confluent_per_s / aiokafka_per_s, 2),
                       f"{label}aiokafka_rounds_per_s": [round(r) for r in rates["aiokafka"]],
                       f"{label}confluent_rounds_per_s": [round(r) for r in rates["confluent"]]})
    result.update({"small_batch": small_batch, "small_batch_records": small_records,
                   "small_batch_aiokafka_transactions_per_s": round(result["small_batch_aiokafka_per_s"] / small_batch),
                   "small_batch_confluent_transactions_per_s": round(result["small_batch_confluent_per_s"] / small_batch)})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.client_spike")
    parser.add_argument("--records", type=int, default=RECORDS_DEFAULT, help="backlog records each loop reads")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternating rounds of the two loops")
    parser.add_argument("--small-batch", type=int, default=SMALL_BATCH, help="records per transaction, second run")
    parser.add_argument("--small-records", type=int, default=SMALL_BATCH_RECORDS, help="records of the second run")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    import aiokafka
    import confluent_kafka

    result = run(Settings.from_env(), args.records, args.rounds, args.small_batch, args.small_records)
    result["aiokafka_version"] = aiokafka.__version__
    result["confluent_kafka_version"] = confluent_kafka.__version__
    result["librdkafka_version"] = confluent_kafka.libversion()[0]
    print(f"\ntransactional consume -> produce, median of {args.rounds} rounds:\n"
          f"  {args.records:,} records, batches of {result['batch_max']:,}: aiokafka {result['aiokafka_per_s']:,}/s, "
          f"confluent-kafka {result['confluent_per_s']:,}/s, ratio {result['confluent_to_aiokafka']}\n"
          f"  {args.small_records:,} records, batches of {args.small_batch}: aiokafka "
          f"{result['small_batch_aiokafka_transactions_per_s']:,} transactions/s, confluent-kafka "
          f"{result['small_batch_confluent_transactions_per_s']:,} transactions/s")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
