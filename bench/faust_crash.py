"""The crash test's load and checks against the Faust baseline: SIGKILL it while commands flow, then count.

tests/system/test_crash_exactly_once.py does this to our processor and asserts every check. This script
does the same to the Faust baseline (bench/faust_baseline.py: one exactly-once ledger worker and one
at-least-once relay worker) and reports each check as a count (bench/faust_checks.py), for the reader who
asked for Faust (docs/DESIGN.md section 1 records a run). Run by hand, on the local stack only:

    python -m bench.faust_crash [--commands 12000] [--rate 400] [--seed 7] [--fresh-host] [--keep] [--json]

The load mirrors the crash test's, scaled to Faust's speed: wallets opened and seeded, then deposits,
withdrawals, transfers (some to a wallet that does not exist, so refunds happen), holds placed, captured
and released; 2% of the commands sent twice (producer resends), 2% poison messages. Both workers are
SIGKILLed while commands flow, each time a few seconds after the restarted ledger worker wrote its first
outcome (so every kill lands mid-work), at least KILLS_MIN times (`--fresh-host`: the ledger worker comes
back on an empty data folder). Then they run undisturbed until every command has an outcome (or a
deadline), go idle for Faust's commit interval, and are stopped with SIGTERM. The crash test's failpoint
inside a batch has no Faust counterpart; only the kills from outside are applied. The namespace (topics,
Faust's stores, logs) is removed at the end unless `--keep`, or the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.codec import CommandCodec, EventCodec, SchemaRegistry
from app.domain import commands as c
from app.domain import events as e
from app.kafka import consumer_options, producer_options
from app.settings import Settings
from bench.faust_bench import IDLE_BEFORE_STOP_S, delete_faust_topics, ensure_installed, start_workers
from bench.faust_checks import (count_violations, end_offset_total, keys_from_changelog, read_records,
                                table_from_changelog, table_from_rocksdb)
from bench.processes import stop as stop_processes
from bench.workloads import crash_mix
from wallet import isolation

WALLETS = 300
DUPLICATE_RESEND_RATIO = 0.02
POISON_RATIO = 0.02
# A kill lands this long (s, a random point in the range) after the restarted worker's first outcome:
# before and after Faust's periodic commit (every 2.8 s).
KILL_AFTER_PROGRESS_S = (1.0, 6.0)
# A restarted worker's first outcome: Faust's start (imports, group join, table recovery) on a busy machine.
PROGRESS_TIMEOUT_S = 120
KILLS_MIN = 4
# Bound of the kill loop, whatever the send rate.
KILLS_MAX = 30
# Longest wait, after the last kill, for an outcome of every command (Faust: a few hundred commands/s).
OUTCOMES_TIMEOUT_S = 600
# Longest wait for the transfers in flight to settle (their legs go through the relay, then the ledger).
SETTLE_TIMEOUT_S = 60
POLL_INTERVAL_S = 2.0


def build_commands(rng: random.Random, count: int) -> tuple[list[str], list[c.CommandBase]]:
    """The crash test's mix (tests/system/test_crash_exactly_once.py), `count` commands in all."""
    return crash_mix(rng, count, WALLETS, "fc")


async def _send_at_rate(settings: Settings, codec: CommandCodec, commands: list[c.CommandBase], rate_per_s: int,
                        rng: random.Random) -> list[bytes]:
    """Send at `rate_per_s` with some resends and some poison; return the poison values sent."""
    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    chunk = max(1, rate_per_s // 20)
    started = time.monotonic()
    poison: list[bytes] = []
    try:
        for start in range(0, len(commands), chunk):
            part = commands[start:start + chunk]
            part += [cmd for cmd in part if rng.random() < DUPLICATE_RESEND_RATIO]
            futures = [await producer.send(settings.commands_topic, key=cmd.wallet_id.encode(), value=codec.encode(cmd))
                       for cmd in part]
            for cmd in part:
                if rng.random() < POISON_RATIO:
                    value = b"\x07poison-%d" % len(poison)
                    poison.append(value)
                    futures.append(await producer.send(settings.commands_topic, key=cmd.wallet_id.encode(),
                                                       value=value))
            await asyncio.gather(*futures)
            await asyncio.sleep(max(0.0, started + (start + chunk) / rate_per_s - time.monotonic()))
    finally:
        await producer.stop()
    return poison


class _OutcomeCount:
    """The number of records on the events topic so far (its end offsets), to see a worker make progress."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = AIOKafkaConsumer(**consumer_options(settings, None))

    async def __aenter__(self) -> "_OutcomeCount":
        await self.consumer.start()
        await self.consumer._client.force_metadata_update()
        self.tps = [TopicPartition(self.settings.events_topic, p)
                    for p in sorted(self.consumer.partitions_for_topic(self.settings.events_topic))]
        return self

    async def __aexit__(self, *exc) -> None:
        await self.consumer.stop()

    async def __call__(self) -> int:
        return sum((await self.consumer.end_offsets(self.tps)).values())


def _kill(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def _wait_until(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(POLL_INTERVAL_S)
    return False


async def run(base: Settings, count: int, rate_per_s: int, seed: int, fresh_host: bool, keep: bool) -> dict:
    from bench.faust_baseline import COMMAND_IDS_TABLE, WALLETS_TABLE, app_id, datadir  # needs faust: see main()

    settings = isolation.prepare_topics(isolation.isolated_settings(base, "faust-crash", folder="bench"))
    registry = SchemaRegistry.for_settings(settings)
    codec = CommandCodec(registry, settings.commands_topic)
    events_codec = EventCodec(registry, settings.events_topic)
    legs_codec = CommandCodec(registry, settings.transfer_legs_topic)
    rng = random.Random(seed)
    wallets, commands = build_commands(rng, count)
    sent_ids = {cmd.command_id for cmd in commands}
    started = time.monotonic()
    procs = start_workers(settings, 1)
    kills = 0
    outcomes_per_life: list[int] = []
    try:
        sending = asyncio.create_task(_send_at_rate(settings, codec, commands, rate_per_s, rng))
        async with _OutcomeCount(settings) as outcome_count:
            while (not sending.done() or kills < KILLS_MIN) and kills < KILLS_MAX:
                at_start = await outcome_count()

                async def deciding() -> bool:
                    return await outcome_count() > at_start

                # Kill a worker that is deciding (its first outcome is out), at a random point of its commit cycle.
                if not await _wait_until(deciding, PROGRESS_TIMEOUT_S):
                    break  # nothing left to decide
                await asyncio.sleep(rng.uniform(*KILL_AFTER_PROGRESS_S))
                _kill(procs)
                kills += 1
                outcomes_per_life.append(await outcome_count() - at_start)
                if fresh_host:
                    shutil.rmtree(datadir(settings, "ledger", 0), ignore_errors=True)
                procs = start_workers(settings, 1)
        poison = await sending

        async def events() -> list[e.EventBase]:
            values = [r.value for r in await read_records(settings, settings.events_topic)]
            await events_codec.ensure(values)
            return [events_codec.decode(value) for value in values]

        async def all_decided() -> bool:
            return sent_ids <= {ev.command_id for ev in await events()}

        async def settled() -> bool:
            found = await events()
            debited = {ev.transfer_id for ev in found if isinstance(ev, e.TransferDebited)}
            return debited <= {ev.transfer_id for ev in found
                               if isinstance(ev, (e.TransferCredited, e.TransferRefunded))}

        decided = await _wait_until(all_decided, OUTCOMES_TIMEOUT_S)
        await _wait_until(settled, SETTLE_TIMEOUT_S)
        await asyncio.sleep(IDLE_BEFORE_STOP_S)
    finally:
        stop_processes(procs)
    exit_codes = [proc.returncode for proc in procs]
    found = await events()
    dlq = await read_records(settings, settings.dlq_topic)
    legs = await read_records(settings, settings.transfer_legs_topic)
    changelog_topic = f"{app_id(settings, 'ledger')}-{WALLETS_TABLE}-changelog"
    changelog = await read_records(settings, changelog_topic)
    remembered = await read_records(settings, f"{app_id(settings, 'ledger')}-{COMMAND_IDS_TABLE}-changelog")
    stores = sorted((datadir(settings, "ledger", 0) / "v1" / "tables").glob(f"{WALLETS_TABLE}-*.db"))
    await legs_codec.ensure(r.value for r in legs)
    counts = count_violations(found, sent_ids, [r.value for r in dlq], poison,
                              [legs_codec.decode(r.value).command_id for r in legs],
                              {"committed_changelog": table_from_changelog(changelog),
                               "rocksdb_on_disk": table_from_rocksdb(stores)},
                              keys_from_changelog(remembered))
    # Records outside any transaction leave no markers: committed records = the sum of the end offsets.
    transactions = {"events_topic_committed_records_and_end_offsets":
                    [len(found), await end_offset_total(settings, settings.events_topic)],
                    "wallets_changelog_committed_records_and_end_offsets":
                    [len(changelog), await end_offset_total(settings, changelog_topic)]}
    if not keep:
        delete_faust_topics(settings)
        isolation.discard(settings)
    return {"namespace": settings.app_id, "kept": keep, "commands": len(commands), "wallets": len(wallets),
            "rate_per_s": rate_per_s,
            "fresh_host": fresh_host, "sigkills": kills, "outcomes_written_per_killed_life": outcomes_per_life,
            "every_command_decided_in_time": decided, "exit_codes_on_sigterm": exit_codes,
            "seconds": round(time.monotonic() - started, 1), **transactions, **counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faust_crash", description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=12_000)
    # Above what one Faust worker decides here, so a backlog waits and every kill lands mid-transaction.
    parser.add_argument("--rate", type=int, default=400, help="commands sent per second")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fresh-host", action="store_true",
                        help="restart each killed ledger worker on an empty data folder, as a replacement host or a "
                             "pod without a volume would: its tables come back from the changelog alone")
    parser.add_argument("--keep", action="store_true", help="leave the namespace (topics, Faust's stores, logs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    ensure_installed()
    result = asyncio.run(run(Settings.from_env(), args.commands, args.rate, args.seed, args.fresh_host, args.keep))
    for key, value in result.items():
        print(f"  {key:52} {value}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
