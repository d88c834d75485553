"""`wallet bench sink`: MySQL sink catch-up from zero against a naive one-event-per-transaction sink.

In one run, in a namespace of its own (wallet/isolation.py, as the tests isolate themselves): topics and
schemas, app id and two migrated databases, `bench_sink_<hex>` and `bench_sink_<hex>_naive` (the local
replica does not apply `bench_*`, so it does not compete for the cores). No Redis is written. The namespace
is removed at the end (`--keep` leaves it).
1. Setup (not timed): N events (default 1,000,000) of W wallets are encoded with `EventCodec` straight onto
   the topic (no processor): per wallet an opening, then deposits, withdrawals, holds, transfers and
   rejections with consistent versions and balances.
2. Sink: the production projection loop (`agents.projection.run_projection` with `MySqlWriter`: one DB
   transaction per batch, multi-row INSERT IGNORE, version-guarded upserts, up to two batches without a
   wallet in common written at once, offsets committed in log order after the DB commits) catches up
   from offset 0. events/s = N / (time until the group's committed offsets reach the end of every
   partition).
3. Naive: the same decoded events, each written in its own DB transaction (the same statements), on the
   first `--naive-events` (default 20,000) only: it is too slow to run to a million. Its rate is
   extrapolated to N, and the table says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

from app.settings import Settings
from wallet import isolation

DRAIN_TIMEOUT_S = 1_800
PRODUCE_FLUSH_TIMEOUT_S = 300


def build_events(count: int, wallets: int, seed: int = 7):
    """`count` events over `wallets` wallets, each wallet's versions consecutive from 1."""
    from app.domain import events as e

    rng = random.Random(seed)
    ts = int(time.time() * 1000) - count
    ids = [f"bs{i:07d}" for i in range(wallets)]
    balance = {w: 0 for w in ids}
    version = {w: 0 for w in ids}
    out = []
    hash_ = "0" * 64

    def base(wallet_id: str, i: int, applied: bool = True) -> dict:
        if applied:
            version[wallet_id] += 1
        b = balance[wallet_id]
        return dict(wallet_id=wallet_id, command_id=f"bc{i}", timestamp_ms=ts + i, version=version[wallet_id],
                    balance_after_minor=b, available_after_minor=b, held_after_minor=0, hash=hash_)

    for i in range(count):
        wallet_id = ids[i % wallets]
        if version[wallet_id] == 0:
            out.append(e.WalletOpened(**base(wallet_id, i), owner_id="bench", currency="EUR",
                                      overdraft_limit_minor=0))
            continue
        roll = rng.random()
        amount = rng.randint(1, 10_000)
        if roll < 0.45:
            balance[wallet_id] += amount
            out.append(e.Deposited(**base(wallet_id, i), amount_minor=amount, currency="EUR", reference="",
                                   description=""))
        elif roll < 0.65 and balance[wallet_id] >= amount:
            balance[wallet_id] -= amount
            out.append(e.Withdrawn(**base(wallet_id, i), amount_minor=amount, currency="EUR", reference="",
                                   description=""))
        elif roll < 0.80 and balance[wallet_id] >= amount:
            balance[wallet_id] -= amount
            out.append(e.TransferDebited(**base(wallet_id, i), transfer_id=f"bt{i}",
                                         destination_wallet_id=ids[(i + 1) % wallets], amount_minor=amount,
                                         currency="EUR", reference=""))
        elif roll < 0.90:
            out.append(e.HoldPlaced(**base(wallet_id, i), hold_id=f"bh{i}", amount_minor=0 + amount,
                                    currency="EUR", expires_at_ms=ts + 3_600_000))
        else:
            out.append(e.CommandRejected(**base(wallet_id, i, applied=False), command_kind="Withdraw",
                                         code="INSUFFICIENT_FUNDS", detail="bench"))
    return out


def produce(settings: Settings, events: list) -> None:
    from confluent_kafka import Producer

    from app.codec import EventCodec, SchemaRegistry
    from app.kafka import confluent_producer_config

    codec = EventCodec(SchemaRegistry(settings.registry_url), settings.events_topic)
    producer = Producer(confluent_producer_config(settings, **{
        "linger.ms": 50, "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000}))
    for event in events:
        while True:
            try:
                producer.produce(settings.events_topic, key=event.wallet_id.encode(), value=codec.encode(event))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(PRODUCE_FLUSH_TIMEOUT_S) != 0:
        raise RuntimeError("events not delivered in time")


async def run_sink(settings: Settings, total: int) -> float:
    """Seconds for the production MySQL projection to commit offsets for all `total` events."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from agents import mysql_sink
    from agents.projection import run_projection
    from app.codec import SchemaRegistry

    registry = SchemaRegistry.for_settings(settings)
    writer = await mysql_sink.create_writer(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    group = f"{settings.app_id}-mysql-sink"
    started = time.perf_counter()
    task = asyncio.create_task(run_projection(settings, "mysql", writer, registry=registry))
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            if task.done():
                task.result()
                raise RuntimeError("the sink stopped before it caught up")
            offsets = await admin.list_consumer_group_offsets(group)
            done = sum(meta.offset for tp, meta in offsets.items() if isinstance(tp, TopicPartition)
                       and tp.topic == settings.events_topic and meta.offset > 0)
            if done >= total:
                return time.perf_counter() - started
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the sink did not catch up within {DRAIN_TIMEOUT_S} s")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await admin.close()
        await writer.engine.dispose()


async def run_naive(settings: Settings, sample: int) -> tuple[int, float]:
    """(events, seconds) writing the first `sample` events of the topic one DB transaction each."""
    from agents import mysql_sink
    from wallet.rebuild import read_event_batches

    writer = await mysql_sink.create_writer(settings)
    written = 0
    elapsed = 0.0
    try:
        async for items in read_event_batches(settings, batch_events=5_000):
            started = time.perf_counter()
            for item in items[:sample - written]:
                await writer([item])
            elapsed += time.perf_counter() - started
            written += min(len(items), sample - written)
            if written >= sample:
                break
    finally:
        await writer.engine.dispose()
    return written, elapsed


def main(argv: list[str], base: Settings) -> int:
    parser = argparse.ArgumentParser(prog="wallet bench sink")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--wallets", type=int, default=20_000)
    parser.add_argument("--naive-events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=base.sink_batch_size_max, help="sink_batch_size_max")
    parser.add_argument("--keep", action="store_true", help="leave the namespace (topics, databases) for inspection")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from ops.local import stack

    stack.up(base)
    settings = isolation.isolated_settings(base, "sink", folder="bench", sink_batch_size_max=args.batch)
    fast = naive = None
    finished = False
    try:
        isolation.prepare_topics(settings)
        t0 = time.perf_counter()
        events = build_events(args.events, args.wallets)
        produce(settings, events)
        setup_s = time.perf_counter() - t0
        del events

        fast = isolation.with_database(settings)
        sink_s = asyncio.run(run_sink(fast, args.events))
        events_per_s = args.events / sink_s

        naive = isolation.with_database(settings, suffix="-naive")
        naive_count, naive_s = asyncio.run(run_naive(naive, args.naive_events))
        naive_per_s = naive_count / naive_s
        ratio = events_per_s / naive_per_s
        finished = True
    finally:
        if args.keep:
            print(f"bench: kept namespace {settings.app_id} (topics {settings.app_id}.*, databases "
                  f"{settings.app_id.replace('-', '_')}[_naive])", flush=True)
        else:
            for database in (naive, fast):
                if database is not None:
                    isolation.discard(database, database=True, topics=False, state=False)
            isolation.discard(settings, state=finished)

    rows = [
        ("events", f"{args.events:,} over {args.wallets:,} wallets (setup {setup_s:.0f} s, not timed)"),
        ("sink (batched, production loop)", f"{events_per_s:,.0f} events/s  ({sink_s:.1f} s, batch "
                                            f"{args.batch:,})"),
        ("naive (1 event per transaction)", f"{naive_per_s:,.0f} events/s  (measured on {naive_count:,} "
                                            f"events in {naive_s:.1f} s; {args.events:,} would take "
                                            f"~{args.events / naive_per_s / 60:.0f} min: extrapolated)"),
        ("ratio", f"{ratio:.1f}x"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.json:
        print(json.dumps({"events": args.events, "wallets": args.wallets, "batch": args.batch,
                          "seconds": round(sink_s, 2), "events_per_s": round(events_per_s),
                          "naive_events": naive_count, "naive_seconds": round(naive_s, 2),
                          "naive_events_per_s": round(naive_per_s), "naive_extrapolated": True,
                          "ratio": round(ratio, 1)}))
    return 0
