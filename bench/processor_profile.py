"""Profile one processor draining a backlog: `python -m bench.processor_profile [--commands N] [--wallets W]`.

In a namespace of its own (wallet/isolation.py): open and fund the wallets with a processor that is then
stopped, put the bench's workload (bench/processor_bench.py) on the commands topic as a backlog, and drain
it with one `Processor` (all partitions) under pyinstrument until every command and credit leg has its
outcome. Prints the call tree; the reader counting outcomes runs in the same process and shows as `_drain`.
Run it under the benchmark lock (docs/BENCHMARKS.md): it is a timed profile.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time

from agents.processor import Processor
from app.codec import CommandCodec, EventCodec, SchemaRegistry
from app.domain import commands as c
from app.settings import Settings
from bench.processor_bench import _drain, _produce, build_workload
from wallet import isolation

SETUP_TIMEOUT_S = 600
DRAIN_TIMEOUT_S = 900
# Sampling interval of the profiler: fine enough for a run of tens of seconds, cheap enough not to dominate.
SAMPLE_INTERVAL_S = 0.001


async def profile(base: Settings, count: int, wallets: int) -> str:
    """The pyinstrument text of one processor draining `count` commands over `wallets` wallets."""
    from pyinstrument import Profiler

    settings = isolation.isolated_settings(base, "profile", folder="bench")
    isolation.prepare_topics(settings)
    try:
        registry = SchemaRegistry.for_settings(settings)
        codec = CommandCodec(registry, settings.commands_topic)
        events = EventCodec(registry, settings.events_topic)
        ids, work = build_workload(count, wallets, False)
        ts = int(time.time() * 1000)
        setup = [c.OpenWallet(command_id=f"open-{w}", wallet_id=w, timestamp_ms=ts, owner_id="bench", currency="EUR")
                 for w in ids]
        setup += [c.Deposit(command_id=f"fund-{w}", wallet_id=w, timestamp_ms=ts, amount_minor=1_000_000,
                            currency="EUR") for w in ids]
        setup_run = asyncio.create_task(Processor(settings, member_name="profile-0").run())
        await _produce(settings, codec, setup)
        await _drain(settings, settings.events_topic, events, "fund-", len(ids), SETUP_TIMEOUT_S)
        setup_run.cancel()
        await asyncio.gather(setup_run, return_exceptions=True)
        await _produce(settings, codec, work)
        gc.collect()
        gc.freeze()  # as the worker does once ready (wallet/worker.py)
        profiler = Profiler(interval=SAMPLE_INTERVAL_S, async_mode="disabled")
        started = time.monotonic()
        profiler.start()
        run = asyncio.create_task(Processor(settings, member_name="profile-0").run())
        tally = await _drain(settings, settings.events_topic, events, "bc-", len(work), DRAIN_TIMEOUT_S)
        profiler.stop()
        elapsed_s = time.monotonic() - started
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        return (f"{count} commands and {tally.legs} legs drained in {elapsed_s:.1f} s (group join included)\n"
                + profiler.output_text(unicode=False, color=False))
    finally:
        isolation.discard(settings)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.processor_profile")
    parser.add_argument("--commands", type=int, default=60_000)
    parser.add_argument("--wallets", type=int, default=30_000)
    args = parser.parse_args()
    print(asyncio.run(profile(Settings.from_env(), args.commands, args.wallets)))


if __name__ == "__main__":
    main()
