"""The Avro fast paths compiled against the same source interpreted: `python -m bench.codec_bench [--json]`.

app/avro_reader.py and app/avro_writer.py run compiled where setup.py built them (docs/ARCHITECTURE.md). This
times what they do per message, through the codec as the processor calls it (app/codec.py `encode`, `decode`),
with the build `import` loads and with the same source run by the interpreter, in the same run: the outcome
events and the commands of the processor bench's mix (bench/processor_bench.py; W wallets opened and funded,
then N commands decided as the processor decides them). Best of R rounds of each, the two builds alternating.
No Kafka, no other process: CPU per message on this machine now.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import app
from agents.deciding import decide_command
from app.codec import CommandCodec, EventCodec
from app.compiled import is_compiled
from app.domain.limits import Limits
from app.settings import Settings
from bench.processor_bench import build_workload
from bench.workloads import offline_options, open_and_fund
from tables.wallet_store import PartitionStore


def interpreted(name: str) -> ModuleType:
    """Module `name` (of the `app` package) run from its `.py`, even where its compiled build is what `import`
    loads."""
    source = Path(app.__file__).parent.joinpath(*name.split(".")[1:]).with_suffix(".py")
    loader = importlib.machinery.SourceFileLoader(f"{name}__interpreted", str(source))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def codecs(build: str) -> tuple[EventCodec, CommandCodec]:
    """An event codec and a command codec whose fast reader and writer are `build`'s: "loaded" (what `import`
    loads: the compiled build where there is one), "source" (the same modules interpreted) or "fastavro" (no
    fast path: what the fast paths are compared with in tests/unit/test_avro_reader.py and test_avro_writer.py)."""
    events, commands = EventCodec(None, "events"), CommandCodec(None, "commands")
    if build == "fastavro":
        for codec in (events, commands):
            codec._own_reader = codec._own_writer = None
    elif build == "source":
        reader = interpreted("app.avro_reader").FlatRecordReader
        writer = interpreted("app.avro_writer").FlatRecordWriter
        for codec in (events, commands):
            codec._own_reader = reader.for_schema(codec.schema, codec.types)
            codec._own_writer = writer.for_schema(codec.schema, codec.types)
    return events, commands


def _messages(count: int, wallets: int) -> tuple[list[Any], list[Any]]:
    """(the outcome events, the commands) of the processor bench's mix, as domain objects."""
    events = EventCodec(None, "events")
    ids, work = build_workload(count, wallets, hot=False)
    decided: list[Any] = []

    def encode(event: Any) -> bytes:
        decided.append(event)
        return events.encode(event)

    settings = Settings()
    limits = Limits(amount_max_major=settings.amount_max_major, holds_open_max=settings.holds_open_max)
    all_commands = list(open_and_fund(ids)) + list(work)
    with tempfile.TemporaryDirectory() as folder:
        store = PartitionStore(Path(folder) / "store")
        try:
            for command in all_commands:
                decide_command(store, command, int(time.time() * 1000), limits, encode)
                store.apply()
        finally:
            store.close()
    return decided, all_commands


def _best_us(call: Callable[[Any], Any], items: list[Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for item in items:
            call(item)
        best = min(best, time.process_time() - started)
    return best / len(items) * 1e6


def run(count: int, wallets: int, rounds: int) -> dict:
    events, commands = _messages(count, wallets)
    builds = {build: codecs(build) for build in ("loaded", "source")}
    wire = {build: (list(map(codec_pair[0].encode, events)), list(map(codec_pair[1].encode, commands)))
            for build, codec_pair in builds.items()}
    assert wire["loaded"] == wire["source"], "the two builds must write the same bytes"
    result: dict[str, Any] = {"events": len(events), "commands": len(commands), "rounds": rounds,
                              "compiled": {name: is_compiled(name)
                                           for name in ("app.avro_reader", "app.avro_writer")}}
    timings: dict[str, dict[str, float]] = {"loaded": {}, "source": {}}
    for _ in range(rounds):  # alternate the builds, one round each, so that both see the same machine
        for build, (event_codec, command_codec) in builds.items():
            event_wire, command_wire = wire[build]
            for op, call, items in (("event_encode", event_codec.encode, events),
                                    ("event_decode", event_codec.decode, event_wire),
                                    ("command_encode", command_codec.encode, commands),
                                    ("command_decode", command_codec.decode, command_wire)):
                us = _best_us(call, items, 1)
                timings[build][op] = min(us, timings[build].get(op, us))
    for op in timings["loaded"]:
        result[f"{op}_us"] = round(timings["loaded"][op], 2)
        result[f"{op}_source_us"] = round(timings["source"][op], 2)
        result[f"{op}_speedup"] = round(timings["source"][op] / timings["loaded"][op], 2)
    return result


def main() -> None:
    args = offline_options(__doc__, commands=20_000, wallets=5_000, rounds=7)
    result = run(args.commands, args.wallets, args.rounds)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['events']} events, {result['commands']} commands, best of {result['rounds']} rounds; "
          f"compiled: {result['compiled']}")
    for op in ("event_encode", "event_decode", "command_encode", "command_decode"):
        print(f"{op:15} {result[op + '_us']:6.2f} us   interpreted {result[op + '_source_us']:6.2f} us   "
              f"x{result[op + '_speedup']}")


if __name__ == "__main__":
    main()
