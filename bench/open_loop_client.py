"""An open-loop HTTP load generator for `wallet bench http`: deposits at a fixed rate, whatever the answers.

Request i is due at start + i / rate. Its latency is measured from that due time, not from when it was
actually sent, so a stall of the server (or of this client) shows in the figures instead of quietly
slowing the load down (coordinated omission). Requests in flight are bounded; a request waiting for a
slot is already late, and its lateness counts.

The client is a few asyncio protocols speaking HTTP/1.1 over keep-alive connections, one request at a time
per connection, with no task per request: it shares the measured machine's two cores, and a general HTTP
client (aiohttp's took about 500 us of CPU per request, half a core at 1,000/s) would take a quarter of them
from the server it measures. It understands what the API answers (a status line, headers, a body framed by
Content-Length or chunked); anything else is an error named in the statuses.

Run by the bench in its own process, so its CPU is not the measured server's:
    python -m bench.open_loop_client --url http://127.0.0.1:8080 --key K --ids-file ids.txt \
        --rate 1000 --seconds 20
The last line printed is one JSON object (latencies in ms).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

# Bound of requests in flight; at 1,000/s it is 2 s of backlog before sending is delayed.
IN_FLIGHT_MAX = 2_000
# A request without an answer after this is an error (its latency counts as this).
REQUEST_TIMEOUT_S = 10.0
# Opening a connection longer than this is an error of the request that waited for it.
CONNECT_TIMEOUT_S = 5.0
# A response head (status line and headers) longer than this is refused: the API's are a few hundred bytes.
RESPONSE_HEAD_BYTES_MAX = 16_384
DEPOSIT_BODY = b'{"amount": "1.00"}'


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already-sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


class ResponseError(Exception):
    """The server's bytes are not an HTTP/1.1 response this client understands."""


class _Response:
    """Incremental parser of one HTTP/1.1 response: feed bytes, `done` when the whole body arrived."""

    __slots__ = ("status", "_buffer", "_body_left", "_chunked", "keep_alive", "done")

    def __init__(self) -> None:
        self.status = 0
        self._buffer = b""
        self._body_left = -1  # unknown until the head is parsed
        self._chunked = False
        self.keep_alive = True
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Consume `data`; returns what follows the response (nothing, without pipelining)."""
        self._buffer += data
        if self._body_left < 0 and not self._chunked:
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self._buffer) > RESPONSE_HEAD_BYTES_MAX:
                    raise ResponseError("response head too long")
                return b""
            self._parse_head(self._buffer[:head_end].decode("latin-1"))
            self._buffer = self._buffer[head_end + 4:]
        if self._chunked:
            return self._feed_chunked()
        if len(self._buffer) >= self._body_left:
            rest, self._buffer = self._buffer[self._body_left:], b""
            self.done = True
            return rest
        return b""

    def _parse_head(self, head: str) -> None:
        status_line, *header_lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ResponseError(f"bad status line {status_line[:80]!r}")
        self.status = int(parts[1])
        length = None
        for line in header_lines:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value.lower():
                self._chunked = True
            elif name == "connection" and value.strip().lower() == "close":
                self.keep_alive = False
        if not self._chunked:
            if length is None:
                raise ResponseError("response without Content-Length or chunked body")
            self._body_left = length

    def _feed_chunked(self) -> bytes:
        while True:
            line_end = self._buffer.find(b"\r\n")
            if line_end < 0:
                return b""
            size = int(self._buffer[:line_end].split(b";", 1)[0], 16)
            if size == 0:
                trailer_end = self._buffer.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    return b""
                rest, self._buffer = self._buffer[trailer_end + 4:], b""
                self.done = True
                return rest
            if len(self._buffer) < line_end + 2 + size + 2:
                return b""
            self._buffer = self._buffer[line_end + 2 + size + 2:]


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, on_idle: Callable[["_Connection"], None], on_lost: Callable[["_Connection"], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self._on_idle = on_idle
        self._on_lost = on_lost
        self._response: _Response | None = None
        self._finish: Callable[[str], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, finish: Callable[[str], None]) -> None:
        self._response, self._finish = _Response(), finish
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:
            self.transport.abort()  # bytes nobody asked for
            return
        try:
            rest = response.feed(data)
        except (ResponseError, ValueError) as exc:
            self._end(type(exc).__name__)
            self.transport.abort()
            return
        if response.done:
            self._end(str(response.status))
            if rest or not response.keep_alive:
                self.transport.close()
            else:
                self._on_idle(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._finish is not None:
            self._end("ConnectionLost")
        self._on_lost(self)

    def abort(self, status: str) -> None:
        """Give up on the request in flight (timeout): it ends with `status` and the connection closes."""
        if self._finish is not None:
            self._end(status)
        self.transport.abort()

    def _end(self, status: str) -> None:
        finish, self._finish, self._response = self._finish, None, None
        if finish is not None:
            finish(status)


async def run(url: str, key: str, wallet_ids: list[str], rate_per_s: int, seconds: float,
              warmup_s: float, trace: list[dict] | None = None) -> dict:
    """Deposits at `rate_per_s` for `warmup_s` (not counted) then `seconds`; latencies in ms. With `trace`, one
    dict per request is appended to it: Idempotency-Key, due, sent and done times (wall clock, s)."""
    loop = asyncio.get_running_loop()
    wall_offset_s = time.time() - loop.time()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    run_id = uuid.uuid4().hex[:8]
    head_template = (f"POST {{path}} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(DEPOSIT_BODY)}\r\n"
                     f"Idempotency-Key: {{ikey}}\r\n\r\n")
    counted_from = int(warmup_s * rate_per_s)
    total = int((warmup_s + seconds) * rate_per_s)
    latencies_ms: list[float] = []
    statuses: Counter[str] = Counter()
    idle: list[_Connection] = []
    waiting: collections.deque[Callable[[_Connection | None, str], None]] = collections.deque()
    state = {"in_flight": 0, "opening": 0, "ended": 0, "send_lag_max_s": 0.0, "last_done": 0.0}
    all_done = loop.create_future()

    def on_idle(connection: _Connection) -> None:
        if waiting:
            waiting.popleft()(connection, "")
        else:
            idle.append(connection)

    def on_lost(connection: _Connection) -> None:
        if connection in idle:
            idle.remove(connection)

    def connect_done(task: asyncio.Task) -> None:
        state["opening"] -= 1
        if task.cancelled() or task.exception() is not None:
            error = "ConnectTimeout" if task.cancelled() else type(task.exception()).__name__
            if waiting:
                waiting.popleft()(None, error)
            return
        on_idle(task.result()[1])

    async def connect() -> tuple[asyncio.BaseTransport, _Connection]:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            return await loop.create_connection(lambda: _Connection(on_idle, on_lost), host, port)

    def start(i: int, due: float) -> None:
        if state["in_flight"] >= IN_FLIGHT_MAX:
            waiting_for_slot.append((i, due))
            return
        state["in_flight"] += 1
        wallet_id = wallet_ids[i % len(wallet_ids)]
        ikey = f"hb-{run_id}-{i}"
        request = (head_template.format(path=f"/v1/wallets/{wallet_id}/deposits", ikey=ikey).encode()
                   + DEPOSIT_BODY)

        def with_connection(connection: _Connection | None, error: str) -> None:
            sent = loop.time()
            state["send_lag_max_s"] = max(state["send_lag_max_s"], sent - due)
            timer: asyncio.TimerHandle | None = None

            def finish(status: str) -> None:
                if timer is not None:
                    timer.cancel()
                end(i, due, ikey, sent, status)

            if connection is None:
                finish(error)
                return
            connection.send(request, finish)
            timer = loop.call_at(due + REQUEST_TIMEOUT_S, connection.abort, "TimeoutError")

        if idle:
            with_connection(idle.pop(), "")
        else:
            waiting.append(with_connection)
            state["opening"] += 1
            loop.create_task(connect()).add_done_callback(connect_done)

    waiting_for_slot: collections.deque[tuple[int, float]] = collections.deque()

    def end(i: int, due: float, ikey: str, sent: float, status: str) -> None:
        done = loop.time()
        state["in_flight"] -= 1
        state["ended"] += 1
        if i >= counted_from:
            latencies_ms.append((done - due) * 1000)
            statuses[status] += 1
            state["last_done"] = max(state["last_done"], done)
        if trace is not None:
            trace.append({"kind": "client", "ikey": ikey, "due": due + wall_offset_s, "sent": sent + wall_offset_s,
                          "done": done + wall_offset_s, "status": status, "counted": i >= counted_from})
        if waiting_for_slot:
            start(*waiting_for_slot.popleft())
        if state["ended"] == total and not all_done.done():
            all_done.set_result(None)

    started = loop.time() + 0.05
    for i in range(total):
        due = started + i / rate_per_s
        loop.call_at(due, start, i, due)
    if total:
        await all_done
    for connection in idle:
        connection.transport.close()
    latencies_ms.sort()
    counted = len(latencies_ms)
    first_due = started + counted_from / rate_per_s
    return {"requests": counted, "statuses": dict(statuses), "rate_per_s": rate_per_s,
            "completed_per_s": counted / max(1e-9, state["last_done"] - first_due),
            "p50_ms": percentile(latencies_ms, 0.50), "p99_ms": percentile(latencies_ms, 0.99),
            "p999_ms": percentile(latencies_ms, 0.999), "max_ms": latencies_ms[-1] if latencies_ms else 0.0,
            "send_lag_max_ms": state["send_lag_max_s"] * 1000}
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
