"""An open-loop HTTP load generator for `wallet bench http`: deposits at a fixed rate, whatever the answers.

Request i is due at start + i / rate. Its latency is measured from that due time, not from when it was
actually sent, so a stall of the server (or of this client) shows in the figures instead of quietly
slowing the load down (coordinated omission). Requests in flight are bounded; a request waiting for a
slot is already late, and its lateness counts.

Run by the bench in its own process, so its CPU is not the measured server's:
    python -m bench.open_loop_client --url http://127.0.0.1:8080 --key K --ids-file ids.txt \
        --rate 1000 --seconds 20
The last line printed is one JSON object (latencies in ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
import uuid
from collections import Counter

import aiohttp

# Bound of requests in flight; at 1,000/s it is 2 s of backlog before sending is delayed.
IN_FLIGHT_MAX = 2_000
# Connections to the server: one per request in flight (HTTP/1.1 has no pipelining here), so the number
# of connections never caps the rate the way a closed-loop client would.
CONNECTIONS_MAX = IN_FLIGHT_MAX
# A request without an answer after this is an error (its latency counts as this).
REQUEST_TIMEOUT_S = 10.0
DEPOSIT_BODY = {"amount": "1.00"}


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already-sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


async def run(url: str, key: str, wallet_ids: list[str], rate_per_s: int, seconds: float,
              warmup_s: float, trace: list[dict] | None = None) -> dict:
    """Deposits at `rate_per_s` for `warmup_s` (not counted) then `seconds`; latencies in ms. With `trace`, one
    dict per request is appended to it: Idempotency-Key, due, sent and done times (wall clock, s)."""
    loop = asyncio.get_running_loop()
    wall_offset_s = time.time() - loop.time()
    run_id = uuid.uuid4().hex[:8]
    headers = {"Authorization": f"Bearer {key}"}
    slots = asyncio.Semaphore(IN_FLIGHT_MAX)
    counted_from = warmup_s * rate_per_s
    latencies_ms: list[float] = []
    statuses: Counter[str] = Counter()
    send_lag_max_s = 0.0
    last_done = 0.0

    async def one(session: aiohttp.ClientSession, i: int, due: float) -> None:
        nonlocal send_lag_max_s, last_done
        async with slots:
            sent = loop.time()
            send_lag_max_s = max(send_lag_max_s, sent - due)
            wallet_id = wallet_ids[i % len(wallet_ids)]
            idempotency_key = f"hb-{run_id}-{i}"
            try:
                async with session.post(f"{url}/v1/wallets/{wallet_id}/deposits", json=DEPOSIT_BODY,
                                        headers={**headers, "Idempotency-Key": idempotency_key}) as resp:
                    await resp.read()
                    status = str(resp.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                status = type(exc).__name__
        done = loop.time()
        if i >= counted_from:
            latencies_ms.append((done - due) * 1000)
            statuses[status] += 1
            last_done = max(last_done, done)
        if trace is not None:
            trace.append({"kind": "client", "ikey": idempotency_key, "due": due + wall_offset_s,
                          "sent": sent + wall_offset_s, "done": done + wall_offset_s, "status": status,
                          "counted": i >= counted_from})

    total = int((warmup_s + seconds) * rate_per_s)
    connector = aiohttp.TCPConnector(limit=CONNECTIONS_MAX)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        started = loop.time()
        for i in range(total):
            due = started + i / rate_per_s
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, i, due)))
        await asyncio.gather(*tasks)
    latencies_ms.sort()
    counted = len(latencies_ms)
    first_due = started + counted_from / rate_per_s
    return {"requests": counted, "statuses": dict(statuses), "rate_per_s": rate_per_s,
            "completed_per_s": counted / max(1e-9, last_done - first_due),
            "p50_ms": percentile(latencies_ms, 0.50), "p99_ms": percentile(latencies_ms, 0.99),
            "p999_ms": percentile(latencies_ms, 0.999), "max_ms": latencies_ms[-1] if latencies_ms else 0.0,
            "send_lag_max_ms": send_lag_max_s * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.open_loop_client")
    parser.add_argument("--url", required=True, help="base URL of the API")
    parser.add_argument("--key", required=True, help="API key with wallets:write")
    parser.add_argument("--ids-file", required=True, help="wallet ids, one a line (used in turn)")
    parser.add_argument("--rate", type=int, default=1_000, help="deposits per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured duration")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="duration before it, not counted")
    parser.add_argument("--trace-file", default=None,
                        help="JSON lines, one per request: due, sent, done (bench/latency_trace.py joins them)")
    args = parser.parse_args()
    with open(args.ids_file) as fh:
        wallet_ids = [line.strip() for line in fh if line.strip()]
    t0, cpu0 = time.monotonic(), time.process_time()
    trace = [] if args.trace_file else None
    result = asyncio.run(run(args.url, args.key, wallet_ids, args.rate, args.seconds, args.warmup_s, trace))
    if trace is not None:
        with open(args.trace_file, "w") as fh:
            fh.writelines(json.dumps(line) + "\n" for line in trace)
    result["wall_s"] = time.monotonic() - t0
    # Cores this client kept busy: near 1.0 would mean the load generator, not the server, set the pace.
    result["client_cores"] = (time.process_time() - cpu0) / result["wall_s"]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
