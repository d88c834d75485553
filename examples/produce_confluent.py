#!/usr/bin/env python3
"""Open wallets and fund them over Kafka with confluent-kafka, the way an upstream team's service would.

It writes an `OpenWallet` and a `Deposit` for each of `--wallets` wallets to the ledger's command topic,
with librdkafka's default partitioner, confluent-kafka's `SerializingProducer` and its schema-registry
`AvroSerializer` set to use the schema the ledger registered (`auto.register.schemas=False`,
`use.latest.version=True`). docs/PRODUCERS.md is the contract it follows.

    python examples/produce_confluent.py --bootstrap 127.0.0.1:9092 \
        --registry http://127.0.0.1:8081/apis/ccompat/v7 --topic wallet.commands --wallets 3

It needs only `confluent-kafka[avro]` (it imports nothing of the ledger). Command ids are derived from the
wallet and the deposit's reference, so running it twice with the same arguments is a harmless resend: the
ledger answers each repeat with the first outcome and moves no money twice. Exit status 0 when the broker
acknowledged every command, 1 otherwise. Outcomes appear on `wallet.events`, not here.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import uuid
import zlib

from confluent_kafka import SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import StringSerializer

# The ledger's rules for a wallet id; command ids here are built from it and stay within the public id rules
# (`[A-Za-z0-9_.:-]{1,128}`).
WALLET_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Avro full names of the union branches: the namespace of the ledger's schema, then the command kind.
NAMESPACE = "wallet.v1"
# Every command id this producer writes starts with its name, so it can never meet another producer's ids or
# the HTTP API's (`<8 hex digits>.<Idempotency-Key>`).
ID_NAMESPACE = "example"
# Longest wait for the broker to acknowledge everything this script sent.
FLUSH_TIMEOUT_S = 30.0
# How long to let a full send queue (librdkafka's queue.buffering.max.messages) drain before one retry.
QUEUE_FULL_WAIT_S = 1.0
# Longest wait for the topic's metadata (the partition count, needed for --no-key).
METADATA_TIMEOUT_S = 10.0


def command(kind: str, wallet_id: str, command_id: str, body: dict) -> dict:
    """A `WalletCommand` record as the AvroSerializer wants it.

    The body is a union of records. A bare dict would be written as the first branch whose fields it
    satisfies (fastavro's rule): a `Withdraw` body would go out as a `Deposit`, and an empty `Close` body as
    a `Freeze`. The tuple `(full branch name, fields)` names the branch, so the ledger reads what was meant.
    """
    return {"command_id": command_id, "wallet_id": wallet_id, "timestamp_ms": time.time_ns() // 1_000_000,
            "body": (f"{NAMESPACE}.{kind}", body)}


def wallet_commands(wallet_id: str, owner_id: str, currency: str, amount_minor: int, reference: str) -> list[dict]:
    return [
        command("OpenWallet", wallet_id, f"{ID_NAMESPACE}:open:{wallet_id}",
                {"owner_id": owner_id, "currency": currency, "overdraft_limit_minor": 0}),
        command("Deposit", wallet_id, f"{ID_NAMESPACE}:deposit:{wallet_id}:{reference}",
                {"amount_minor": amount_minor, "currency": currency, "reference": reference,
                 "description": "opening deposit"}),
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument("--registry", default="http://127.0.0.1:8081/apis/ccompat/v7",
                        help="URL of the Confluent-compatible schema registry API")
    parser.add_argument("--topic", default="wallet.commands", help="the ledger's public command topic")
    parser.add_argument("--wallets", type=int, default=3, help="how many wallets to open and fund")
    parser.add_argument("--wallet-prefix", default=f"demo-{uuid.uuid4().hex[:8]}",
                        help="wallet ids are <prefix>-1 .. <prefix>-N")
    parser.add_argument("--currency", default="EUR", help="ISO 4217 code of every wallet")
    parser.add_argument("--amount-minor", type=int, default=1_500,
                        help="deposit per wallet, in minor units of the currency (1500 = 15.00 EUR)")
    parser.add_argument("--reference", default="initial",
                        help="the deposit's reference; part of its command id, so a new one is a new deposit")
    parser.add_argument("--no-key", action="store_true",
                        help="send without a Kafka key; the partition is then chosen here from the wallet id")
    args = parser.parse_args(argv)
    if args.wallets < 1:
        parser.error("--wallets must be at least 1")
    if WALLET_ID_RE.fullmatch(f"{args.wallet_prefix}-{args.wallets}") is None:
        parser.error("wallet ids must match [A-Za-z0-9_-]{1,64}: shorten or fix --wallet-prefix")
    if re.fullmatch(r"[A-Za-z0-9_.:-]{1,40}", args.reference) is None:
        parser.error("--reference must match [A-Za-z0-9_.:-]{1,40} (it is part of a command id)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    registry = SchemaRegistryClient({"url": args.registry})
    subject = f"{args.topic}-value"  # the ledger registers its command schema under <topic>-value
    try:
        schema = registry.get_latest_version(subject).schema
    except SchemaRegistryError as error:
        print(f"no schema under {subject} in {args.registry} ({error}): is --topic the ledger's command topic, "
              "and has `wallet init` run?", file=sys.stderr)
        return 1
    value_serializer = AvroSerializer(registry, schema, conf={
        "auto.register.schemas": False,  # the ledger owns the schema; a producer only uses it
        "use.latest.version": True,  # write with the latest version the ledger registered under the subject
        "subject.name.strategy": topic_subject_name_strategy,  # <topic>-value, whatever the client's default
    })
    producer = SerializingProducer({
        "bootstrap.servers": args.bootstrap,
        # No duplicates or reordering from the client's own retries: a wallet's commands stay in order.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "key.serializer": StringSerializer("utf_8"),  # the key is the wallet id in UTF-8 (None stays None)
        "value.serializer": value_serializer,
        # "partitioner" is left at librdkafka's default (CRC32 of the key): the ledger accepts any partitioner
        # that keeps a key on one partition.
    })
    partitions = None
    if args.no_key:
        # Without a key librdkafka spreads records over partitions, which would reorder a wallet's commands.
        # Keep each wallet on one partition by choosing it from the wallet id (any stable hash does).
        partitions = len(producer.list_topics(args.topic, timeout=METADATA_TIMEOUT_S).topics[args.topic].partitions)
        if not partitions:
            print(f"topic {args.topic} has no partitions (does it exist?)", file=sys.stderr)
            return 1

    failures: list[str] = []
    acknowledged = 0

    def on_delivery(error, message) -> None:
        nonlocal acknowledged
        if error is not None:
            failures.append(f"{message.key()!r}: {error}")
        else:
            acknowledged += 1

    wallet_ids = [f"{args.wallet_prefix}-{index}" for index in range(1, args.wallets + 1)]
    for wallet_id in wallet_ids:
        key = None if args.no_key else wallet_id
        partition = zlib.crc32(wallet_id.encode()) % partitions if partitions else -1  # -1: the partitioner's
        for record in wallet_commands(wallet_id, f"owner-{wallet_id}", args.currency, args.amount_minor,
                                      args.reference):
            try:
                producer.produce(args.topic, key=key, value=record, partition=partition, on_delivery=on_delivery)
            except BufferError:  # the client's queue is full: let it drain for a moment, then try once more
                producer.poll(QUEUE_FULL_WAIT_S)
                producer.produce(args.topic, key=key, value=record, partition=partition, on_delivery=on_delivery)
            producer.poll(0)  # serve delivery callbacks as we go
    left = producer.flush(FLUSH_TIMEOUT_S)
    sent = 2 * len(wallet_ids)
    print(f"{acknowledged} of {sent} commands acknowledged on {args.topic} for wallets "
          f"{wallet_ids[0]} .. {wallet_ids[-1]} ({'no key' if args.no_key else 'keyed by wallet id'})")
    for failure in failures:
        print(f"not delivered: {failure}", file=sys.stderr)
    if left or acknowledged != sent:
        print(f"{sent - acknowledged} commands not acknowledged within {FLUSH_TIMEOUT_S:.0f} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
