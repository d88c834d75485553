"""What a transaction costs with one transactional producer per partition and with transaction slots.

`python -m bench.transaction_slots [--transactions 200] [--records 25] [--rounds 2] [--json]`

The processor commits each partition's batch in a transaction: its records, then its input offsets, then
the commit (agents/processor.py). Right after a commit the broker still writes the commit markers, and the
same transactional id cannot begin its next transaction until it has (CONCURRENT_TRANSACTIONS); with
`processor_transaction_slots` = 2 the next transaction runs on the other producer (agents/transactions.py).
This runs that cycle back to back, `--transactions` times, with 1 slot (the baseline) and with 2, alternating
for `--rounds` rounds on a fresh topic of the local broker (loopback; deleted at the end), through the
processor's own `start_transaction_slots`. Per transaction: `--records` records of 200 bytes to one partition
and an offset commit. Prints milliseconds per transaction (p50, p90, p99 of each configuration, the first 10
of each loop left out as warm-up) and the ratio of the p50s.

A third loop, 2 slots without the offset commit (`send_offsets_to_transaction`: AddOffsetsToTxn and
TxnOffsetCommit, two round trips to the group coordinator), measures what committing the input offsets through
the group costs a transaction: what a processor that kept its input offsets in a record of its own
transaction would save (docs/BENCHMARKS.md, Processor, seventh session).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import time
import uuid

from aiokafka import TopicPartition

from agents.transactions import start_transaction_slots, use_transaction_retry_backoff
from app.settings import Settings
from bench.client_spike import _create_topics, _delete_topics

TRANSACTIONS_DEFAULT = 200
RECORDS_DEFAULT = 25
ROUNDS_DEFAULT = 2
WARMUP_TRANSACTIONS = 10
VALUE_BYTES = 200
LOOP_TIMEOUT_S = 300.0


async def _loop(settings: Settings, topic: str, slots_used: int, transactions: int, records: int,
                offsets: bool = True) -> list[float]:
    """Milliseconds of each of `transactions` back-to-back transactions on `slots_used` slots (with an offset
    commit in each when `offsets`)."""
    tag = f"bench-slots-{uuid.uuid4().hex[:6]}"
    slots = await start_transaction_slots(
        dataclasses.replace(settings, app_id=tag, processor_transaction_slots=slots_used), 0)
    value = b"x" * VALUE_BYTES
    times_ms = []
    try:
        for i in range(transactions):
            producer = slots.next()
            started = time.perf_counter()
            await producer.begin_transaction()
            batch = producer.create_batch()
            for r in range(records):
                batch.append(key=b"k%d" % r, value=value, timestamp=None)
            batch.close()
            await producer.send_batch(batch, topic, partition=0)
            if offsets:
                await producer.send_offsets_to_transaction({TopicPartition(topic, 0): i + 1}, tag)
            await producer.commit_transaction()
            times_ms.append((time.perf_counter() - started) * 1000)
    finally:
        await slots.stop()
    return times_ms[WARMUP_TRANSACTIONS:]


def _quantiles(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    return {"p50_ms": round(statistics.median(ordered), 2), "p90_ms": round(ordered[int(len(ordered) * 0.9)], 2),
            "p99_ms": round(ordered[int(len(ordered) * 0.99)], 2)}


async def run(settings: Settings, transactions: int, records: int, rounds: int) -> dict:
    use_transaction_retry_backoff(settings.transaction_retry_backoff_ms)
    topic = f"bench-slots-{uuid.uuid4().hex[:6]}"
    _create_topics(settings, [topic])
    loops = {"one_slot": (1, True), "two_slots": (2, True), "two_slots_no_offsets": (2, False)}
    times: dict[str, list[float]] = {name: [] for name in loops}
    try:
        for round_ in range(rounds):
            for name, (slots_used, offsets) in loops.items():
                measured = await asyncio.wait_for(
                    _loop(settings, topic, slots_used, transactions, records, offsets), LOOP_TIMEOUT_S)
                times[name] += measured
                print(f"round {round_ + 1}, {name}: p50 {statistics.median(measured):.1f} ms", flush=True)
    finally:
        _delete_topics(settings, [topic])
    quantiles = {name: _quantiles(values) for name, values in times.items()}
    return {"transactions": transactions, "records": records, "rounds": rounds,
            **{f"{name}_{k}": v for name, figures in quantiles.items() for k, v in figures.items()},
            "p50_one_to_two": round(quantiles["one_slot"]["p50_ms"] / quantiles["two_slots"]["p50_ms"], 2),
            "p50_offsets_share": round(1 - quantiles["two_slots_no_offsets"]["p50_ms"]
                                       / quantiles["two_slots"]["p50_ms"], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transaction_slots")
    parser.add_argument("--transactions", type=int, default=TRANSACTIONS_DEFAULT, help="transactions per loop")
    parser.add_argument("--records", type=int, default=RECORDS_DEFAULT, help="records per transaction")
    parser.add_argument("--rounds", type=int, default=ROUNDS_DEFAULT,
                        help="alternating rounds of 1 slot, 2 slots, and 2 slots without the offset commit")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    result = asyncio.run(run(Settings.from_env(), args.transactions, args.records, args.rounds))
    print(f"\nms per transaction ({args.records} records and an offset commit), 1 slot against 2:\n"
          f"  p50 {result['one_slot_p50_ms']} / {result['two_slots_p50_ms']}, "
          f"p90 {result['one_slot_p90_ms']} / {result['two_slots_p90_ms']}, "
          f"p99 {result['one_slot_p99_ms']} / {result['two_slots_p99_ms']}; "
          f"p50 ratio {result['p50_one_to_two']}\n"
          f"2 slots without the offset commit: p50 {result['two_slots_no_offsets_p50_ms']}, "
          f"p90 {result['two_slots_no_offsets_p90_ms']}, p99 {result['two_slots_no_offsets_p99_ms']}; "
          f"the offset commit is {result['p50_offsets_share']:.0%} of a transaction's p50")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
