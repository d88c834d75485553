"""Where a deposit's time goes: per-request timestamps from the client, the API and the processor, joined.

`wallet bench http --trace-dir DIR` runs the API and the worker through this module (`python -m
bench.latency_trace wallet.cli worker ...`): it wraps a few methods of the running code with timers before
handing over to the real entry point, so production code carries no tracing. Each process appends JSON lines
to the file named by LATENCY_TRACE_FILE (written when the process exits). The open-loop client writes its
own (bench/open_loop_client.py `--trace-file`). `breakdown()` joins them: the client and the API on the
Idempotency-Key, the API and the processor on the reply token the command carries (app/replies.py).

Clocks: every process is on this machine and stamps `time.time()`; Kafka's record timestamps (ms) are not
needed for the join but are kept (the command's CreateTime, the reply's).

Stages of one deposit, in order (each the difference of two stamps, so they sum to the client's latency):
- client_lag: due -> the client starts the request (the load generator's own lateness);
- to_handler: -> the API's deposit handler runs (connection, the API's event loop queue, parsing);
- pre_publish: -> the command is handed to the producer (auth, body, wallet currency, rate-limit gate);
- publish: -> the broker acknowledged it (producer linger, acks);
- processor_wait: -> the processor's poll returned it (its fetch wait, and the batch in progress);
- pre_process: -> its batch starts (schema ids, the batch lock);
- decide: -> the partition's transaction starts (decide of the whole batch, all partitions);
- commit: -> the partition's transaction committed (sends, offsets, EndTxn; see the commit_* fields);
- reply_delivery: -> the API's reply consumer returned the answer (transaction markers, its fetch);
- answer: -> the handler returned (wake-up of the waiting request, rendering);
- to_client: -> the client has the whole response.
"""

from __future__ import annotations

import atexit
import contextvars
import json
import os
import runpy
import sys
import time
from pathlib import Path

TRACE_FILE_ENV = "LATENCY_TRACE_FILE"
STAGES = ("client_lag", "to_handler", "pre_publish", "publish", "processor_wait", "pre_process", "decide",
          "commit", "reply_delivery", "answer", "to_client")

_lines: list[str] = []


def _emit(record: dict) -> None:
    _lines.append(json.dumps(record))


def _flush(path: str) -> None:
    with open(path, "a") as fh:
        fh.write("\n".join(_lines) + ("\n" if _lines else ""))


def _token(headers) -> str | None:
    for name, value in headers or ():
        if name == "reply.token":
            return bytes(value).decode()
    return None


# ---------------------------------------------------------------- hooks in the API


def _install_web() -> None:
    from web import commands, writes

    request_info: contextvars.ContextVar[dict | None] = contextvars.ContextVar("trace_request", default=None)
    original_deposit = writes.deposit

    async def deposit(request):
        info = {"kind": "web", "ikey": request.headers.get("Idempotency-Key"), "handler0": time.time()}
        request_info.set(info)
        try:
            return await original_deposit(request)
        finally:
            info["handler1"] = time.time()
            _emit(info)

    writes.deposit = deposit
    original_start = commands.CommandGateway.start

    async def start(self):
        await original_start(self)
        send_and_wait, getmany = self._producer.send_and_wait, self._consumer.getmany

        async def traced_send_and_wait(topic, value=None, key=None, partition=None, timestamp_ms=None,
                                       headers=None):
            info = request_info.get()
            if info is not None:
                info["token"], info["publish0"] = _token(headers), time.time()
            result = await send_and_wait(topic, value, key=key, partition=partition, timestamp_ms=timestamp_ms,
                                         headers=headers)
            if info is not None:
                info["publish1"], info["command_ts_ms"] = time.time(), result.timestamp
            return result

        async def traced_getmany(*partitions, timeout_ms=0, max_records=None):
            batch = await getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
            arrived = time.time()
            for records in batch.values():
                for record in records:
                    _emit({"kind": "reply", "token": _token(record.headers), "arrived": arrived,
                           "reply_ts_ms": record.timestamp})
            return batch

        self._producer.send_and_wait = traced_send_and_wait
        self._consumer.getmany = traced_getmany

    commands.CommandGateway.start = start


# ---------------------------------------------------------------- hooks in the processor


def _install_processor() -> None:
    from aiokafka import AIOKafkaProducer

    from agents import processor

    fetched_at = {"t": 0.0}
    commit_info: contextvars.ContextVar[dict | None] = contextvars.ContextVar("trace_commit", default=None)
    original_loop, original_process, original_commit = (processor.Processor._loop, processor.Processor._process,
                                                        processor.Processor._commit)

    async def _loop(self, consumer):
        getmany = consumer.getmany

        async def traced_getmany(*partitions, timeout_ms=0, max_records=None):
            batch = await getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
            if batch:
                fetched_at["t"] = time.time()
            return batch

        consumer.getmany = traced_getmany
        await original_loop(self, consumer)

    async def _process(self, batch, releases):
        started = time.time()
        tokens = {tp.partition: [_token(r.headers) for r in records] for tp, records in batch.items()
                  if tp.topic == self.settings.commands_topic}
        commits: dict[int, dict] = {}
        self._trace_commits = commits
        await original_process(self, batch, releases)
        _emit({"kind": "batch", "fetched": fetched_at["t"], "process0": started, "process1": time.time(),
               "size": sum(len(records) for records in batch.values()),
               "partitions": {str(p): {"tokens": tokens.get(p, []), **commits.get(p, {})} for p in commits}})

    async def _commit(self, partition, sends, offsets):
        info = {"commit0": time.time(), "sends": len(sends)}
        self._trace_commits[partition] = info
        commit_info.set(info)
        await original_commit(self, partition, sends, offsets)
        info["commit1"] = time.time()

    def timed(name):
        original = getattr(AIOKafkaProducer, name)

        async def wrapper(self, *args, **kwargs):
            info = commit_info.get()
            if info is not None:
                info[f"{name}0"] = time.time()
            result = await original(self, *args, **kwargs)
            if info is not None:
                info[f"{name}1"] = time.time()
            return result

        setattr(AIOKafkaProducer, name, wrapper)

    for name in ("begin_transaction", "send_offsets_to_transaction", "commit_transaction"):
        timed(name)
    processor.Processor._loop, processor.Processor._process, processor.Processor._commit = (
        _loop, _process, _commit)


# ---------------------------------------------------------------- the join


def _percentile(values: list[float], fraction: float) -> float:
    values = sorted(values)
    return values[max(0, min(len(values) - 1, int(fraction * len(values) + 0.5) - 1))] if values else 0.0


def _read(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        if path.exists():
            rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def breakdown(trace_dir: Path) -> dict:
    """Per-request stages (ms) joined from the files in `trace_dir`; p50/p99/p99.9 of each, and the share of
    the mean; plus the commit's sub-phases and, for the requests in the slowest 1%, the mean of each stage."""
    rows = _read(sorted(trace_dir.glob("*.jsonl")))
    clients = {r["ikey"]: r for r in rows if r["kind"] == "client" and r.get("counted")}
    web = {r["ikey"]: r for r in rows if r["kind"] == "web" and r.get("token")}
    replies = {r["token"]: r for r in rows if r["kind"] == "reply"}
    in_batch: dict[str, tuple[dict, dict]] = {}
    for batch in (r for r in rows if r["kind"] == "batch"):
        for part in batch["partitions"].values():
            for token in part.get("tokens", []):
                in_batch[token] = (batch, part)
    requests = []
    for ikey, client in clients.items():
        api = web.get(ikey)
        if api is None or "publish1" not in api or api["token"] not in in_batch or api["token"] not in replies:
            continue
        batch, part = in_batch[api["token"]]
        if "commit1" not in part:
            continue
        stamps = [client["due"], client["sent"], api["handler0"], api["publish0"], api["publish1"],
                  batch["fetched"], batch["process0"], part["commit0"], part["commit1"],
                  replies[api["token"]]["arrived"], api["handler1"], client["done"]]
        stages = {name: (stamps[i + 1] - stamps[i]) * 1000 for i, name in enumerate(STAGES)}
        stages["total"] = (client["done"] - client["due"]) * 1000
        for phase, (start, end) in {"commit_sends": ("commit0", "send_offsets_to_transaction0"),
                                    "commit_offsets": ("send_offsets_to_transaction0",
                                                       "send_offsets_to_transaction1"),
                                    "commit_end": ("commit_transaction0", "commit_transaction1")}.items():
            if start in part and end in part:
                stages[phase] = (part[end] - part[start]) * 1000
        stages["batch_size"] = batch["size"]
        requests.append(stages)
    if not requests:
        return {"requests": 0}
    names = [*STAGES, "total", "commit_sends", "commit_offsets", "commit_end", "batch_size"]
    slowest = sorted(requests, key=lambda r: r["total"])[-max(1, len(requests) // 100):]
    mean_total = sum(r["total"] for r in requests) / len(requests)
    out = {"requests": len(requests), "unmatched": len(clients) - len(requests), "stages": {}}
    for name in names:
        values = [r[name] for r in requests if name in r]
        if not values:
            continue
        mean = sum(values) / len(values)
        out["stages"][name] = {"p50": round(_percentile(values, 0.5), 2), "p99": round(_percentile(values, 0.99), 2),
                               "p999": round(_percentile(values, 0.999), 2), "mean": round(mean, 2),
                               "share_of_mean": round(mean / mean_total, 3) if name in STAGES else None,
                               "mean_in_slowest_1pct": round(sum(r.get(name, 0.0) for r in slowest) / len(slowest), 2)}
    return out


def print_breakdown(result: dict) -> None:
    print(f"\nper-request breakdown ({result['requests']} requests joined, {result.get('unmatched', 0)} not)")
    print(f"  {'stage':16} {'p50':>8} {'p99':>8} {'p99.9':>8} {'mean':>8} {'share':>6} {'slow 1%':>8}")
    for name, row in result.get("stages", {}).items():
        share = f"{row['share_of_mean']:.0%}" if row["share_of_mean"] is not None else ""
        print(f"  {name:16} {row['p50']:8.2f} {row['p99']:8.2f} {row['p999']:8.2f} {row['mean']:8.2f} "
              f"{share:>6} {row['mean_in_slowest_1pct']:8.2f}")


def main() -> None:
    """`python -m bench.latency_trace <module> <args...>`: hooks installed, then `<module>` run as __main__."""
    if len(sys.argv) >= 3 and sys.argv[1] == "--breakdown":
        result = breakdown(Path(sys.argv[2]))
        print_breakdown(result)
        print(json.dumps(result))
        return
    path = os.environ[TRACE_FILE_ENV]
    atexit.register(_flush, path)
    module, args = sys.argv[1], sys.argv[2:]
    if "--role" in args:
        roles = {args[i + 1] for i, arg in enumerate(args) if arg == "--role"}
        if "web" in roles:
            _install_web()
        if "processor" in roles:
            _install_processor()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
