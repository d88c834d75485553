"""Folding committed events into partition stores: `python -m bench.fold_bench [--events N] [--wallets W] [--json]`.

What a cold takeover (agents/restore.py `catch_up`) and a standby (agents/standby.py) pay per event, against a
floor measured in the same run. In a namespace of its own (wallet/isolation.py), removed at the end:
1. Setup (not timed): W wallets opened and funded, then N commands of the processor bench's mix
   (bench/processor_bench.py: deposits, withdrawals, transfers with their credit legs, holds placed, captured and
   released) and, per wallet of a small share, a freeze and an unfreeze, all decided by one real `Processor`
   owning every partition. Its stores are the owner's stores the fold must reproduce.
2. Floor: a loop that fetches the whole events topic as a catch-up does (same consumer options, same fetch
   bounds) and decodes every record (headers and value), without folding.
3. Fold: `catch_up` of every partition into fresh stores. Then every key of every folded store is compared with
   the owner's store (wallet states, seen-command markers with their outcomes, retention and hold indexes,
   gauges, offset marker); a difference fails the run.
Floor and fold alternate `--rounds` times; each figure is its best round. Prints events/s of both and the ratio
fold / floor (1.0: folding costs nothing beyond fetching and decoding). `--profile` prints pyinstrument's call
tree of one more fold. Run it under the benchmark lock (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from rocksdict import Options, Rdict

from agents.processor import Processor
from agents.restore import RESTORE_FETCH_RECORDS_MAX, RESTORE_FETCH_WAIT_MS, catch_up
from app.codec import CommandCodec, EventCodec, SchemaRegistry
from app.domain import commands as c
from app.kafka import consumer_options
from app.settings import Settings
from bench.processor_bench import _drain, _produce, build_workload
from bench.workloads import open_and_fund
from tables.wallet_store import PartitionStore
from wallet import isolation

SETUP_TIMEOUT_S = 900
# The owner's last commits reaching its stores after the last outcome was read.
OWNER_SETTLE_TIMEOUT_S = 60
# One wallet in this many is frozen and unfrozen after the mix (status events in the log).
FREEZE_EVERY_WALLETS = 50
# Sampling interval of the profiler: fine enough for a fold of seconds, cheap enough not to dominate.
SAMPLE_INTERVAL_S = 0.001
OWNER = "fold-owner"
# How long the restore consumer's stop is waited for at the end (see `_fold`).
CONSUMER_STOP_WAIT_S = 10


def _progress(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def _status_changes(wallets: list[str]) -> list[c.CommandBase]:
    ts = int(time.time() * 1000)
    out: list[c.CommandBase] = []
    for w in wallets[::FREEZE_EVERY_WALLETS]:
        out.append(c.Freeze(command_id=f"bc-freeze-{w}", wallet_id=w, timestamp_ms=ts, reason="bench"))
        out.append(c.Unfreeze(command_id=f"bc-unfreeze-{w}", wallet_id=w, timestamp_ms=ts))
    return out


async def _owner_writes_the_log(settings: Settings, registry: SchemaRegistry, events: int, wallets: int) -> None:
    """Decide the workload with one real processor; return once its stores reflect the whole events topic."""
    commands = CommandCodec(registry, settings.commands_topic)
    codec = EventCodec(registry, settings.events_topic)
    ids, work = build_workload(events, wallets, False)
    work += _status_changes(ids)
    await _produce(settings, commands, open_and_fund(ids) + work)
    _progress(f"{2 * len(ids) + len(work)} commands produced; the owner decides them")
    processor = Processor(settings, member_name=OWNER)
    run = asyncio.create_task(processor.run())
    try:
        await _drain(settings, settings.events_topic, codec, "bc-", len(work), SETUP_TIMEOUT_S)
        ends = await _end_offsets(settings)
        _progress(f"every outcome read; events topic ends at {ends}")
        deadline = time.monotonic() + OWNER_SETTLE_TIMEOUT_S
        # The last transaction's marker follows its last event: a store is settled at `end - 1`.
        while any(p not in processor.stores or processor.stores[p].events_offset < end - 1
                  for p, end in ends.items()):
            if run.done() or time.monotonic() > deadline:
                raise RuntimeError("the owner's stores did not reach the end of the events topic")
            await asyncio.sleep(0.1)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def _end_offsets(settings: Settings) -> dict[int, int]:
    consumer = AIOKafkaConsumer(**consumer_options(settings, None))
    await consumer.start()
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]
        return {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def _floor(settings: Settings, codec: EventCodec) -> int:
    """Fetch and decode the whole events topic as a catch-up fetches it; the number of records."""
    consumer = AIOKafkaConsumer(**consumer_options(settings, None))
    await consumer.start()
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if ends[tp] > 1}
        count = 0
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=RESTORE_FETCH_WAIT_MS,
                                           max_records=RESTORE_FETCH_RECORDS_MAX)
            await codec.ensure(record.value for records in batch.values() for record in records)
            for records in batch.values():
                for record in records:
                    dict(record.headers or ())
                    codec.decode(record.value)
                count += len(records)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return count
    finally:
        await consumer.stop()


async def _fold(settings: Settings, codec: EventCodec, consumer: AIOKafkaConsumer, root: Path) -> float:
    """`catch_up` of every partition into fresh stores under `root` (closed on return); its seconds.

    `consumer` is long-lived, as the processor's restore consumer is: stopping one right after a catch-up
    unassigned its partitions can wait for minutes in aiokafka (seen here), which is no part of a fold."""
    shutil.rmtree(root, ignore_errors=True)
    stores = {p: PartitionStore(root / f"p{p}") for p in range(settings.partitions)}

    async def caught_up(partition: int) -> None:
        pass

    try:
        started = time.perf_counter()
        await catch_up(consumer, settings.events_topic, codec, stores, settings.command_retention_s, caught_up)
        return time.perf_counter() - started
    finally:
        for store in stores.values():
            store.close()


def _differences(owner_root: Path, folded_root: Path, partitions: int) -> list[str]:
    """Keys whose values differ between the owner's stores and the folded ones (at most a few named)."""
    found: list[str] = []
    for p in range(partitions):
        contents = []
        for root in (owner_root, folded_root):
            db = Rdict(str(root / f"p{p}"), Options(raw_mode=True))
            try:
                contents.append(dict(db.items()))
            finally:
                db.close()
        owner, folded = contents
        for key in sorted(owner.keys() | folded.keys()):
            if owner.get(key) != folded.get(key):
                found.append(f"p{p} {key[:80]!r}: owner {owner.get(key, b'<absent>')[:80]!r}, "
                             f"fold {folded.get(key, b'<absent>')[:80]!r}")
    return found


async def run(base: Settings, events: int, wallets: int, rounds: int, profile: bool) -> dict:
    settings = isolation.isolated_settings(base, "fold", folder="bench", processor_standby_replicas=0)
    isolation.prepare_topics(settings)
    folded_root = Path(tempfile.mkdtemp(prefix="fold-bench-"))
    consumer = None
    _progress(f"namespace {settings.app_id}")
    try:
        registry = SchemaRegistry.for_settings(settings)
        codec = EventCodec(registry, settings.events_topic)
        await _owner_writes_the_log(settings, registry, events, wallets)
        floor_s, fold_s, count = [], [], 0
        consumer = AIOKafkaConsumer(**consumer_options(settings, None))
        await consumer.start()
        for _ in range(rounds):
            started = time.perf_counter()
            count = await _floor(settings, codec)
            floor_s.append(time.perf_counter() - started)
            fold_s.append(await _fold(settings, codec, consumer, folded_root))
            _progress(f"floor {floor_s[-1]:.2f} s, fold {fold_s[-1]:.2f} s for {count} events")
        differences = _differences(settings.state_dir / "processor" / OWNER, folded_root, settings.partitions)
        if differences:
            raise AssertionError(f"{len(differences)} keys differ between the owner's and the folded stores: "
                                 + "; ".join(differences[:5]))
        result = {"events": count, "wallets": wallets, "partitions": settings.partitions, "rounds": rounds,
                  "floor_events_per_s": round(count / min(floor_s)), "fold_events_per_s": round(count / min(fold_s)),
                  "fold_to_floor": round(min(floor_s) / min(fold_s), 3), "stores_equal": True}
        if profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=SAMPLE_INTERVAL_S, async_mode="disabled")
            profiler.start()
            await _fold(settings, codec, consumer, folded_root)
            profiler.stop()
            result["profile"] = profiler.output_text(unicode=False, color=False)
        return result
    finally:
        if consumer is not None:
            with contextlib.suppress(TimeoutError):  # see `_fold`: a stop may hang; the process ends anyway
                await asyncio.wait_for(consumer.stop(), CONSUMER_STOP_WAIT_S)
        shutil.rmtree(folded_root, ignore_errors=True)
        isolation.discard(settings)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fold_bench")
    parser.add_argument("--events", type=int, default=60_000, help="commands of the mix after the set-up")
    parser.add_argument("--wallets", type=int, default=30_000, help="wallets opened and funded first")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="print the call tree of one more fold")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of text")
    args = parser.parse_args()
    result = asyncio.run(run(Settings.from_env(), args.events, args.wallets, args.rounds, args.profile))
    profile = result.pop("profile", None)
    if profile:
        print(profile)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['events']} events over {result['partitions']} partitions ({result['wallets']} wallets), "
              f"best of {result['rounds']} rounds")
        print(f"floor (fetch + decode): {result['floor_events_per_s']} events/s")
        print(f"fold (catch_up):        {result['fold_events_per_s']} events/s")
        print(f"fold / floor:           {result['fold_to_floor']}  (folded stores equal the owner's)")


if __name__ == "__main__":
    main()
