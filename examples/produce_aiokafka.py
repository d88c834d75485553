#!/usr/bin/env python3
"""Open wallets and fund them over Kafka with aiokafka and fastavro, framing the Confluent wire format by hand.

It writes an `OpenWallet` and a `Deposit` for each of `--wallets` wallets to the ledger's command topic.
The schema comes from the registry's Confluent-compatible API by subject (`<topic>-value`, latest
version); each value is `0x00 | schema id (4 bytes, big endian) | Avro binary`. docs/PRODUCERS.md is the
contract it follows.

    python examples/produce_aiokafka.py --bootstrap 127.0.0.1:9092 \
        --registry http://127.0.0.1:8081/apis/ccompat/v7 --topic wallet.commands --wallets 3

It needs only `aiokafka` and `fastavro` (it imports nothing of the ledger). Command ids are derived from
the wallet and the deposit's reference, so running it twice with the same arguments is a harmless resend.
Exit status 0 when the broker acknowledged every command, 1 otherwise. Outcomes appear on `wallet.events`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib

import fastavro
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

WALLET_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
NAMESPACE = "wallet.v1"
# Every command id this producer writes starts with its name, so it can never meet another producer's ids or
# the HTTP API's (`<8 hex digits>.<Idempotency-Key>`).
ID_NAMESPACE = "example"
# Confluent wire format: magic byte 0, then the schema id as a 4-byte big-endian integer.
WIRE_HEADER = struct.Struct(">bI")
# Longest wait for one registry answer.
REGISTRY_TIMEOUT_S = 10.0
# Longest wait for the broker to acknowledge everything this script sent.
SEND_TIMEOUT_S = 30.0


def latest_schema(registry_url: str, subject: str) -> tuple[int, dict]:
    """The id and the parsed Avro schema of the latest version under `subject` (Confluent-compatible API)."""
    url = f"{registry_url.rstrip('/')}/subjects/{urllib.parse.quote(subject, safe='')}/versions/latest"
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.schemaregistry.v1+json"})
    with urllib.request.urlopen(request, timeout=REGISTRY_TIMEOUT_S) as response:
        found = json.load(response)
    return found["id"], fastavro.parse_schema(json.loads(found["schema"]))


def encode(schema_id: int, schema: dict, record: dict) -> bytes:
    out = io.BytesIO()
    out.write(WIRE_HEADER.pack(0, schema_id))
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def command(kind: str, wallet_id: str, command_id: str, body: dict) -> dict:
    """A `WalletCommand` record for fastavro; `(full branch name, fields)` picks the union branch.

    A bare dict would be written as the first branch its fields satisfy (a `Withdraw` as a `Deposit`).
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


async def produce(args: argparse.Namespace) -> int:
    # The ledger registers its command schema under <topic>-value; a producer reads it, never registers one.
    subject = f"{args.topic}-value"
    try:
        schema_id, schema = latest_schema(args.registry, subject)
    except urllib.error.URLError as error:
        print(f"no schema under {subject} in {args.registry} ({error}): is --topic the ledger's command topic, "
              "and has `wallet init` run?", file=sys.stderr)
        return 1
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        enable_idempotence=True,  # no duplicates or reordering from the client's own retries
        acks="all",
        linger_ms=5,
        # aiokafka's default partitioner hashes the key with murmur2, like Java clients: each wallet's commands
        # land on its own partition at once.
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(args.topic)) if args.no_key else None
        wallet_ids = [f"{args.wallet_prefix}-{index}" for index in range(1, args.wallets + 1)]
        deliveries = []
        for wallet_id in wallet_ids:
            key = None if args.no_key else wallet_id.encode()
            # Without a key, keep each wallet on one partition by choosing it from the wallet id (any stable
            # hash does); a random choice would reorder a wallet's commands.
            partition = partitions[zlib.crc32(wallet_id.encode()) % len(partitions)] if partitions else None
            for record in wallet_commands(wallet_id, f"owner-{wallet_id}", args.currency, args.amount_minor,
                                          args.reference):
                deliveries.append(await producer.send(args.topic, encode(schema_id, schema, record), key=key,
                                                      partition=partition))
        results = await asyncio.wait_for(asyncio.gather(*deliveries, return_exceptions=True), SEND_TIMEOUT_S)
    finally:
        await producer.stop()
    failures = [result for result in results if isinstance(result, BaseException)]
    print(f"{len(results) - len(failures)} of {len(results)} commands acknowledged on {args.topic} for wallets "
          f"{wallet_ids[0]} .. {wallet_ids[-1]} (schema id {schema_id}, "
          f"{'no key' if args.no_key else 'keyed by wallet id'})")
    for failure in failures:
        print(f"not delivered: {failure!r}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(produce(args))
    except (KafkaError, TimeoutError) as error:
        print(f"the commands were not all acknowledged: {error!r}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
