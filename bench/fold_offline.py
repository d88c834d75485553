"""The fold alone, without Kafka: `python -m bench.fold_offline [--events N] [--wallets W] [--rounds R] [--json]`.

What one folded event costs in agents/restore.py `fold_records` and the store write after it, apart from
fetching (bench/fold_bench.py measures the catch-up over a real log). Setup (not timed): W wallets opened and
funded, then N commands of the processor bench's mix (bench/processor_bench.py), decided on one store as the
processor decides them (agents/deciding.py `decide_command`, a store write every 500 commands); the events
they yield, with their fingerprint headers, are the log. Timed: folding the log into a fresh store in slices
of `RESTORE_WRITE_EVERY` events, each written (`apply`), as a catch-up does; best of R rounds, wall and CPU
time. Every key of the folded store is then compared with the owner's; a difference fails the run.

`--callgrind`: under `valgrind --tool=callgrind --instr-atstart=no`, one round, with instrumentation switched
on for the fold only (callgrind_control), so callgrind's total is the fold's instructions: a count that
other work on the machine does not move (docs/BENCHMARKS.md). Run it under the benchmark lock.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

from rocksdict import Options, Rdict

from agents.deciding import decide_command
from agents.restore import RESTORE_WRITE_EVERY, fold_records
from app import identity
from app.codec import EventCodec
from app.domain.limits import Limits
from app.intake import FINGERPRINT_HEADER
from app.settings import Settings
from bench.processor_bench import build_workload
from bench.workloads import open_and_fund
from tables.wallet_store import PartitionStore

# A consumer record as the fold reads it (aiokafka's ConsumerRecord has these attributes).
Record = namedtuple("Record", "offset value headers")
# Commands the owner decides between two store writes (the processor's batches are of this order).
OWNER_WRITE_EVERY = 500
# Events folded before the measured fold, so imports and first calls are not counted.
WARM_UP_EVENTS = 2000


def decide_log(store: PartitionStore, commands: list, codec: EventCodec, clock: Callable[[], int],
               write_every: int) -> list[Record]:
    """Decide `commands` on `store` as an owner does (the transfer legs they call for join the queue as they
    are decided), with `clock()` the decision time of each, writing the store every `write_every` commands;
    the committed events as records. tests/unit/test_restore_fold.py builds its logs with it too."""
    log: list[Record] = []
    queue = list(commands)
    for count, command in enumerate(queue, 1):
        decision = decide_command(store, command, clock(), Limits(), codec.encode)
        for value in decision.values:
            log.append(Record(len(log), value, ((FINGERPRINT_HEADER, decision.digest.encode()),)))
        queue.extend(decision.legs)
        if count % write_every == 0:
            store.changes.events_offset = len(log)
            store.apply()
    store.changes.events_offset = len(log)
    store.apply()
    return log


def _owner_log(store: PartitionStore, events: int, wallets: int) -> list[Record]:
    ids, work = build_workload(events, wallets, False)
    return decide_log(store, open_and_fund(ids) + work, EventCodec(None, "events"),
                      itertools.count(int(time.time() * 1000) + 1).__next__, OWNER_WRITE_EVERY)


def _fold(path: Path, log: list[Record], codec: EventCodec) -> tuple[float, float]:
    """Fold `log` into a fresh store at `path`: (wall seconds, CPU seconds of this process)."""
    store = PartitionStore(path)
    retention_start_ms = identity.retention_start_ms(int(time.time() * 1000), Settings.command_retention_s)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        for first in range(0, len(log), RESTORE_WRITE_EVERY):
            fold_records(store, codec, log[first:first + RESTORE_WRITE_EVERY], retention_start_ms)
            store.apply()
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        store.close()


def store_contents(path: Path) -> dict[bytes, bytes]:
    """Every key and value of the RocksDB store at `path`."""
    db = Rdict(str(path), Options(raw_mode=True))
    try:
        return dict(db.items())
    finally:
        db.close()


def _callgrind(switch: str) -> None:
    subprocess.run(["callgrind_control", "-i", switch, str(os.getpid())], check=True, capture_output=True)


def run(events: int, wallets: int, rounds: int, callgrind: bool) -> dict:
    # The processor's young-generation threshold (agents/deciding.py `young_collections`), as in a worker.
    gc.set_threshold(Settings.processor_gc_young_objects_max, *gc.get_threshold()[1:])
    root = Path(tempfile.mkdtemp(prefix="fold-offline-"))
    try:
        owner = PartitionStore(root / "owner")
        log = _owner_log(owner, events, wallets)
        owner.close()
        codec = EventCodec(None, "events")
        _fold(root / "warm-up", log[:WARM_UP_EVENTS], codec)
        times = []
        for _ in range(1 if callgrind else rounds):
            shutil.rmtree(root / "folded", ignore_errors=True)
            if callgrind:
                _callgrind("on")
            times.append(_fold(root / "folded", log, codec))
            if callgrind:
                _callgrind("off")
        owner_keys, folded_keys = store_contents(root / "owner"), store_contents(root / "folded")
        different = [key for key in owner_keys.keys() | folded_keys.keys()
                     if owner_keys.get(key) != folded_keys.get(key)]
        if different:
            raise AssertionError(f"{len(different)} keys differ between the owner's and the folded store: "
                                 f"{sorted(different)[:5]}")
        wall_s, cpu_s = min(wall for wall, _ in times), min(cpu for _, cpu in times)
        return {"events": len(log), "wallets": wallets, "rounds": len(times),
                "fold_events_per_s": round(len(log) / wall_s),
                "fold_cpu_us_per_event": round(cpu_s / len(log) * 1e6, 1), "stores_equal": True}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fold_offline")
    parser.add_argument("--events", type=int, default=30_000, help="commands of the mix after the set-up")
    parser.add_argument("--wallets", type=int, default=15_000, help="wallets opened and funded first")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--callgrind", action="store_true", help="one round, instrumented alone (see the module)")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of text")
    args = parser.parse_args()
    result = run(args.events, args.wallets, args.rounds, args.callgrind)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['events']} events ({result['wallets']} wallets), best of {result['rounds']} rounds: "
              f"{result['fold_events_per_s']} events/s, {result['fold_cpu_us_per_event']} us of CPU per event "
              "(folded store equals the owner's)")


if __name__ == "__main__":
    main()
