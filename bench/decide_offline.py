"""The decide path alone, without Kafka: `python -m bench.decide_offline [--commands N] [--wallets W] [--rounds R]`.

What one decision costs in CPU on the processor's own path, apart from fetching, committing and the standby:
the command's wire bytes decoded (app/codec.py), decided on the partition's store with its outcome event
encoded (agents/deciding.py `decide_command`, the domain with its invariant checks and hash chain), each
transfer's credit leg encoded, decoded and decided in turn, and the store written every
`processor_batch_size_max` decisions, as the processor writes it after each commit. Setup (not timed): W wallets
opened and funded; then N commands of the processor bench's mix (bench/processor_bench.py). Best of R rounds
of process CPU time, each on a fresh store, with the collector frozen after setup as the worker does. No
other process takes part, so the figure moves far less with the machine's load than `bench processor`. `--json`:
one JSON line.
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
from pathlib import Path

from agents.deciding import decide_command
from app.codec import CommandCodec, EventCodec
from app.domain.limits import Limits
from app.settings import Settings
from bench.processor_bench import build_workload
from bench.workloads import offline_options, open_and_fund
from tables.wallet_store import PartitionStore


def _decide_all(store: PartitionStore, values: list[bytes], commands: CommandCodec, events: EventCodec,
                limits: Limits, write_every: int) -> int:
    """Decide every wire command in `values` and the legs they call for; the number of decisions."""
    queue = list(values)
    for count, value in enumerate(queue, 1):
        decision = decide_command(store, commands.decode(value), int(time.time() * 1000), limits, events.encode)
        queue.extend(commands.encode(leg) for leg in decision.legs)
        if count % write_every == 0:
            store.apply()
    store.apply()
    return len(queue)


def run(count: int, wallets: int, rounds: int) -> dict:
    settings = Settings()
    commands, events = CommandCodec(None, "commands"), EventCodec(None, "events")
    limits = Limits(amount_max_major=settings.amount_max_major, holds_open_max=settings.holds_open_max)
    ids, work = build_workload(count, wallets, hot=False)
    setup = [commands.encode(command) for command in open_and_fund(ids)]
    wire = [commands.encode(command) for command in work]
    cpu_us: list[float] = []
    decisions = 0
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as folder:
            store = PartitionStore(Path(folder) / "store")
            try:
                _decide_all(store, setup, commands, events, limits, settings.processor_batch_size_max)
                gc.collect()
                gc.freeze()
                started = time.process_time()
                decisions = _decide_all(store, wire, commands, events, limits, settings.processor_batch_size_max)
                cpu_us.append((time.process_time() - started) / decisions * 1e6)
            finally:
                gc.unfreeze()
                store.close()
    return {"commands": count, "wallets": wallets, "decisions": decisions, "rounds": rounds,
            "cpu_us_per_decision": round(min(cpu_us), 1), "cpu_us_per_decision_rounds": [round(x, 1) for x in cpu_us]}


def main() -> None:
    args = offline_options(__doc__, commands=60_000, wallets=20_000, rounds=3)
    result = run(args.commands, args.wallets, args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['decisions']} decisions: {result['cpu_us_per_decision']} us CPU each (best of "
              f"{args.rounds}: {result['cpu_us_per_decision_rounds']})")


if __name__ == "__main__":
    main()
