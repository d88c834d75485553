"""`wallet bench http`: the HTTP API's balance reads against MySQL-per-request, and its command latency.

In one run, in a namespace of its own (wallet/isolation.py, as the tests isolate themselves): topics and
schemas, app id, processor state, ports, a migrated MySQL database `bench_http_<hex>` (not replicated: the
local replica ignores `bench_*`, so both servers read the primary) and a claimed Redis database. Nothing is
written to the live read model; the namespace is removed at the end (`--keep` leaves it).
1. Start (not timed): the worker (`wallet worker --role processor --role sinks`), the API
   (`wallet worker --role web`, per-key rate limit raised out of the way) and the baseline server
   (bench/mysql_balance_server.py: one SELECT of the wallets row per request, the seed's read path).
2. Setup (not timed): open and fund N wallets (default 1,000) through the API, then wait until every one
   is in Redis and in the MySQL database both servers read.
3. Balance reads: wrk (one thread, C connections, a Lua script rotating the wallet ids) drives
   `GET /v1/wallets/{id}/balance` on the API, then the same on the baseline, same wallets, same load;
   each after a warm-up. req/s = responses / duration; p50/p99 from wrk's own latency histogram
   (closed loop: each connection sends its next request when the last one is answered).
4. Commands: bench/open_loop_client.py, in its own process, sends deposits (`{"amount": "1.00"}` with an
   Idempotency-Key) at a steady open-loop rate; latency from each request's scheduled send time, so a
   stall is not hidden by the load slowing down (coordinated omission).
Both load generators run on this machine's loopback and share its 2 cores with what they measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from app.settings import REPO_ROOT, Settings
from bench import latency_trace
from bench.processes import stop as stop_processes
from wallet import isolation

# The per-key rate limit is not what this measures: raise it beyond any load a run can make.
RATE_LIMIT_ENV = {"WALLET_RATE_LIMIT_PER_S": "1000000", "WALLET_RATE_LIMIT_BURST": "1000000"}
API_KEY = "bench-http"
SERVER_READY_TIMEOUT_S = 90.0
# Setup: opening and funding wallets, then their arrival in Redis and MySQL.
SETUP_CONCURRENCY = 32
SETUP_TIMEOUT_S = 300.0
SETUP_REQUEST_TIMEOUT_S = 30.0
FUNDING_AMOUNT = "1000000.00"
# wrk runs one thread: a single-process Python server is saturated long before wrk's one core is.
WRK_THREADS = 1
WRK_TIMEOUT_S = 5
# The API's histogram of publish -> answer per command (web/commands.py).
COMMAND_WAIT_HISTOGRAM = "wallet_http_command_wait_seconds"
# The API's count of requests whose rate limit Redis did not answer (web/ratelimit.py).
RATE_LIMIT_UNCHECKED_COUNTER = "wallet_http_rate_limit_unavailable_total"
# py-spy's sampling rate for --profile: enough samples in 15 s, little cost to the sampled process.
PROFILE_RATE_HZ = 250
# Deposits sent at the full rate before the measured ones: connections opened, caches filled.
COMMAND_WARMUP_S = 3.0
# How long the command client may run past its measured seconds (warm-up, then draining a backlog).
COMMAND_CLIENT_TIMEOUT_S = 180.0


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _CpuMeter:
    """Cores each process kept busy between `start()` and `cores()` (1.0 = one core all the time)."""

    def __init__(self, procs: dict[str, subprocess.Popen]) -> None:
        self.procs = procs

    def start(self) -> None:
        self.started = time.monotonic()
        self.cpu_s = {name: _cpu_s(proc.pid) for name, proc in self.procs.items()}

    def used_s(self) -> dict[str, float]:
        """CPU seconds each process used since `start()`."""
        return {name: _cpu_s(proc.pid) - self.cpu_s[name] for name, proc in self.procs.items()}

    def cores(self) -> dict[str, float]:
        wall_s = time.monotonic() - self.started
        return {name: round(used_s / wall_s, 2) for name, used_s in self.used_s().items()}


def _spawn(argv: list[str], settings: Settings, log_path: Path, trace_file: Path | None = None) -> subprocess.Popen:
    """`python -m argv...`; with `trace_file`, through bench/latency_trace.py's timers, written to that file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    trace_env = {}
    if trace_file is not None:
        argv, trace_env = ["bench.latency_trace", *argv], {latency_trace.TRACE_FILE_ENV: str(trace_file)}
    return subprocess.Popen([sys.executable, "-m", *argv], cwd=REPO_ROOT,
                            env={**os.environ, **settings.to_env(), **RATE_LIMIT_ENV, **trace_env},
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait_worker_ready(proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
    while '"worker ready"' not in log_path.read_text(errors="replace"):
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker was not ready within {SERVER_READY_TIMEOUT_S:.0f} s; see {log_path}")
        time.sleep(0.2)


def _http_status(url: str) -> int | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def _wait_answers(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
    while _http_status(url) != 200:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {SERVER_READY_TIMEOUT_S:.0f} s; see {log_path}")
        time.sleep(0.2)


# ---------------------------------------------------------------- setup


async def _open_and_fund(session, base_url: str, wallet_ids: list[str]) -> None:
    slots = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(wallet_id: str) -> None:
        async with slots:
            async with session.post(f"{base_url}/v1/wallets", headers={"Idempotency-Key": f"open-{wallet_id}"},
                                    json={"wallet_id": wallet_id, "owner_id": "bench", "currency": "EUR"}) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"POST /v1/wallets {wallet_id}: {resp.status} {await resp.text()}")
            async with session.post(f"{base_url}/v1/wallets/{wallet_id}/deposits",
                                    headers={"Idempotency-Key": f"fund-{wallet_id}"},
                                    json={"amount": FUNDING_AMOUNT}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"POST deposits {wallet_id}: {resp.status} {await resp.text()}")

    await asyncio.gather(*(one(wallet_id) for wallet_id in wallet_ids))


async def _wait_projected(settings: Settings, wallet_ids: list[str]) -> None:
    """Until every wallet is funded (version >= 2) in Redis and in the MySQL database the servers read."""
    from sqlalchemy import func, select

    from readside.mysql import make_engine
    from readside.redis import make_client, wallet_key
    from readside.readmodel import wallets

    redis = make_client(settings.redis_url)
    engine = make_engine(settings.mysql_replica_dsn or settings.mysql_dsn)
    query = select(func.count()).select_from(wallets).where(wallets.c.wallet_id.in_(wallet_ids),
                                                            wallets.c.version >= 2)
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    try:
        while True:
            pipe = redis.pipeline(transaction=False)
            for wallet_id in wallet_ids:
                pipe.hget(wallet_key(wallet_id), "version")
            in_redis = sum(1 for version in await pipe.execute() if version and int(version) >= 2)
            async with engine.connect() as conn:
                in_mysql = (await conn.execute(query)).scalar_one()
            if in_redis == in_mysql == len(wallet_ids):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"after {SETUP_TIMEOUT_S:.0f} s: {in_redis} wallets in Redis, {in_mysql} in "
                                   f"MySQL, of {len(wallet_ids)}")
            await asyncio.sleep(0.5)
    finally:
        await redis.aclose()
        await engine.dispose()


async def _setup(settings: Settings, base_url: str, wallet_ids: list[str]) -> None:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=SETUP_REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=timeout) as session:
        await _open_and_fund(session, base_url, wallet_ids)
    await _wait_projected(settings, wallet_ids)


# ---------------------------------------------------------------- balance reads (wrk)

WRK_SCRIPT = """-- written by bench/http_bench.py: GET the balance of each wallet in turn
local ids = {%(ids)s}
local i = math.random(#ids)
wrk.headers["Authorization"] = "Bearer %(key)s"
request = function()
  i = i %% #ids + 1
  return wrk.format("GET", "/v1/wallets/" .. ids[i] .. "/balance")
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests": %%d, "duration_us": %%d, "non_2xx": %%d, "socket_errors": %%d, '
    .. '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "p999_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


def _wrk(script: Path, url: str, connections: int, seconds: float) -> dict:
    argv = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{math.ceil(seconds)}s", f"--timeout={WRK_TIMEOUT_S}s",
            "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}: {done.stdout[-500:]} {done.stderr[-500:]}")
    out = done.stdout
    line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
    result = json.loads(line.removeprefix("WRK_JSON "))
    if result["non_2xx"] or result["socket_errors"]:
        raise RuntimeError(f"wrk against {url}: {result['non_2xx']} non-2xx answers, {result['socket_errors']} "
                           "socket errors")
    return {"per_s": result["requests"] / (result["duration_us"] / 1e6), "p50_ms": result["p50_us"] / 1000,
            "p99_ms": result["p99_us"] / 1000, "p999_ms": result["p999_us"] / 1000,
            "max_ms": result["max_us"] / 1000, "requests": result["requests"]}


def _py_spy() -> str | None:
    found = shutil.which("py-spy") or Path(sys.executable).parent / "py-spy"
    return str(found) if Path(found).exists() else None


def _profile(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    """py-spy sampling `pid` for `seconds` into `out` (folded stacks), without pausing it."""
    return subprocess.Popen([_py_spy(), "record", "--pid", str(pid), "--duration", str(math.ceil(seconds)),
                             "--rate", str(PROFILE_RATE_HZ), "--nonblocking", "--format", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _measure_reads(settings: Settings, script: Path, api_url: str, mysql_url: str, connections: int,
                   seconds: float, warmup_s: float, servers: dict[str, subprocess.Popen],
                   profile_dir: Path | None) -> dict:
    """wrk on the API, then on the baseline: a warm-up (discarded) and a measured run each."""
    figures, cores = {}, {}
    for name, url, server in (("balance", api_url, "web"), ("mysql", mysql_url, "mysql-balance-server")):
        _wrk(script, url, connections, warmup_s)
        profiler = None
        if profile_dir and name == "balance":
            profiler = _profile(servers["web"].pid, seconds, profile_dir / "web-balance.txt")
        meter = _CpuMeter({server: servers[server]})
        meter.start()
        figures[name] = _wrk(script, url, connections, seconds)
        cores[name] = meter.cores()[server]
        if profiler is not None:
            profiler.wait(60)
    api, mysql = figures["balance"], figures["mysql"]
    return {"balance_get_per_s": api["per_s"], "balance_p50_ms": api["p50_ms"], "balance_p99_ms": api["p99_ms"],
            "balance_p999_ms": api["p999_ms"], "mysql_get_per_s": mysql["per_s"], "mysql_p50_ms": mysql["p50_ms"],
            "mysql_p99_ms": mysql["p99_ms"], "ratio": api["per_s"] / mysql["per_s"],
            "read_connections": connections, "read_seconds": seconds,
            "balance_web_cores": cores["balance"], "mysql_server_cores": cores["mysql"],
            # CPU per request moves far less with the machine's other load than req/s does.
            "balance_web_cpu_us_per_request": round(cores["balance"] * 1e6 / api["per_s"]),
            "mysql_server_cpu_us_per_request": round(cores["mysql"] * 1e6 / mysql["per_s"]),
            "read_load_average_1m": round(os.getloadavg()[0], 2)}


# ---------------------------------------------------------------- commands (open loop)


def _measure_commands(settings: Settings, base_url: str, ids_file: Path, rate_per_s: int, seconds: float,
                      trace_dir: Path | None) -> dict:
    argv = [sys.executable, "-m", "bench.open_loop_client", "--url", base_url, "--key", API_KEY,
            "--ids-file", str(ids_file), "--rate", str(rate_per_s), "--seconds", str(seconds),
            "--warmup-s", str(COMMAND_WARMUP_S)]
    if trace_dir is not None:
        argv += ["--trace-file", str(trace_dir / "client.jsonl")]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=REPO_ROOT,
                         timeout=seconds + COMMAND_CLIENT_TIMEOUT_S).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return {"command_p50_ms": result["p50_ms"], "command_p99_ms": result["p99_ms"],
            "command_p999_ms": result["p999_ms"], "command_max_ms": result["max_ms"],
            "command_rate_per_s": rate_per_s, "command_completed_per_s": result["completed_per_s"],
            "command_requests": result["requests"], "command_statuses": result["statuses"],
            "command_send_lag_max_ms": result["send_lag_max_ms"], "command_client_cores": result["client_cores"]}


def _scrape(metrics_url: str) -> tuple[dict[float, float], float]:
    """From the API's /metrics: the publish -> answer histogram's cumulative buckets {le: count} and the
    count of requests the rate limiter let through unchecked (Redis did not answer); empty/0 if absent."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    buckets: dict[float, float] = {}
    unchecked = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{COMMAND_WAIT_HISTOGRAM}_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name == RATE_LIMIT_UNCHECKED_COUNTER:
                unchecked += sample.value
    return buckets, unchecked


def _bucket_quantile_ms(before: dict[float, float], after: dict[float, float], fraction: float) -> float | None:
    """The upper bound (ms) of the bucket holding the `fraction` quantile of the observations in between."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not delta or delta[-1][1] <= 0:
        return None
    for le, count in delta:
        if count >= fraction * delta[-1][1]:
            return le * 1000
    return None


# ---------------------------------------------------------------- the run


def run(base: Settings, wallets: int, connections: int, read_seconds: float, warmup_s: float,
        command_rate_per_s: int, command_seconds: float, skip_commands: bool, profile_dir: Path | None,
        keep: bool = False, trace_dir: Path | None = None) -> dict:
    """One run in a namespace of its own, removed afterwards unless `keep` (its state folder, with the
    processes' logs, is kept when the run fails)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `wallet stack up` installs it (ops/local/stack.py APT_PACKAGES)")
    settings = isolation.isolated_settings(base, "http", folder="bench",
                                           api_keys=f"{API_KEY}=wallets:read+wallets:write")
    finished = False
    try:
        settings = isolation.claim_redis_database(isolation.with_database(isolation.prepare_topics(settings)))
        result = _run(settings, wallets, connections, read_seconds, warmup_s, command_rate_per_s, command_seconds,
                      skip_commands, profile_dir, trace_dir)
        finished = True
        if trace_dir is not None and not skip_commands:
            result["command_breakdown"] = latency_trace.breakdown(trace_dir)
    finally:
        if keep:
            print(f"bench: kept namespace {settings.app_id}: {settings.mysql_dsn}, {settings.redis_url}, "
                  f"{settings.state_dir}", flush=True)
        else:
            isolation.discard(settings, database=True, redis_claimed=True, state=finished)
    return {"namespace": settings.app_id, **result}


def _run(settings: Settings, wallets: int, connections: int, read_seconds: float, warmup_s: float,
         command_rate_per_s: int, command_seconds: float, skip_commands: bool, profile_dir: Path | None,
         trace_dir: Path | None) -> dict:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    run_tag = settings.app_id.rsplit("-", 1)[-1]
    wallet_ids = [f"hb-{run_tag}-{i:05d}" for i in range(wallets)]
    ids_file = settings.state_dir / "wallet-ids.txt"
    ids_file.write_text("\n".join(wallet_ids) + "\n")
    script = settings.state_dir / "balance.lua"
    script.write_text(WRK_SCRIPT % {"ids": ",".join(f'"{w}"' for w in wallet_ids), "key": API_KEY})
    baseline_port = isolation.free_port()
    logs = {name: settings.state_dir / f"{name}.log" for name in ("worker", "web", "mysql-balance-server")}
    procs: dict[str, subprocess.Popen] = {}
    try:
        traces = {name: trace_dir / f"{name}.jsonl" if trace_dir else None for name in ("worker", "web")}
        procs["worker"] = _spawn(["wallet.cli", "worker", "--role", "processor", "--role", "sinks"], settings,
                                 logs["worker"], traces["worker"])
        procs["web"] = _spawn(["wallet.cli", "worker", "--role", "web"], settings, logs["web"], traces["web"])
        procs["mysql-balance-server"] = _spawn(["bench.mysql_balance_server", "--port", str(baseline_port)],
                                               settings, logs["mysql-balance-server"])
        api_base = f"http://{settings.http_host}:{settings.http_port}"
        baseline_base = f"http://{settings.http_host}:{baseline_port}"
        _wait_worker_ready(procs["worker"], logs["worker"])
        _wait_answers(f"{api_base}/healthz", procs["web"], logs["web"])
        _wait_answers(f"{baseline_base}/healthz", procs["mysql-balance-server"], logs["mysql-balance-server"])
        setup_started = time.monotonic()
        asyncio.run(_setup(settings, api_base, wallet_ids))
        setup_s = time.monotonic() - setup_started
        sample = f"/v1/wallets/{wallet_ids[0]}/balance"
        result = {"mode": f"{wallets} wallets, wrk {WRK_THREADS} thread {connections} connections, "
                          f"{settings.partitions} partitions", "wallets": wallets,
                  "setup_s": round(setup_s, 1)}
        if read_seconds > 0:
            result.update(_measure_reads(settings, script, f"{api_base}{sample}", f"{baseline_base}{sample}",
                                         connections, read_seconds, warmup_s, procs, profile_dir))
        if not skip_commands:
            profilers = []
            if profile_dir:
                profilers = [_profile(procs[name].pid, command_seconds, profile_dir / f"{name}-commands.txt")
                             for name in ("web", "worker")]
            wait_before, unchecked_before = _scrape(f"{api_base}/metrics")
            meter = _CpuMeter({name: procs[name] for name in ("web", "worker")})
            meter.start()
            result.update(_measure_commands(settings, api_base, ids_file, command_rate_per_s, command_seconds,
                                            trace_dir))
            result.update({f"command_{name}_cores": cores for name, cores in meter.cores().items()})
            sent = command_rate_per_s * (COMMAND_WARMUP_S + command_seconds)
            result["command_web_cpu_us_per_command"] = round(meter.used_s()["web"] * 1e6 / sent)
            result["command_load_average_1m"] = round(os.getloadavg()[0], 2)
            wait_after, unchecked_after = _scrape(f"{api_base}/metrics")
            # Requests for which Redis did not answer the API (it then falls back, e.g. to MySQL).
            result["command_redis_unavailable"] = int(unchecked_after - unchecked_before)
            # Where a command's time goes: the API's own histogram of publish -> answer (Kafka and the
            # processor), as bucket bounds; the rest of command_p50/p99 is the web process and queueing.
            result["command_kafka_wait_p50_ms_le"] = _bucket_quantile_ms(wait_before, wait_after, 0.50)
            result["command_kafka_wait_p99_ms_le"] = _bucket_quantile_ms(wait_before, wait_after, 0.99)
            for profiler in profilers:
                profiler.wait(60)
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"the {name} process exited during the run; see {logs[name]}")
        return result
    finally:
        stop_processes(list(procs.values()))


def _print(result: dict) -> None:
    print(f"\nHTTP benchmark ({result['mode']})")
    rows = [("balance GET req/s", "balance_get_per_s"), ("balance GET p50 ms", "balance_p50_ms"),
            ("balance GET p99 ms", "balance_p99_ms"), ("MySQL-per-request GET req/s", "mysql_get_per_s"),
            ("MySQL-per-request GET p50 ms", "mysql_p50_ms"), ("MySQL-per-request GET p99 ms", "mysql_p99_ms"),
            ("ratio (balance / MySQL)", "ratio"), ("API cores busy (reads)", "balance_web_cores"),
            ("MySQL server cores busy (reads)", "mysql_server_cores"),
            ("API CPU us per GET", "balance_web_cpu_us_per_request"),
            ("MySQL server CPU us per GET", "mysql_server_cpu_us_per_request"),
            ("load average 1 min (reads)", "read_load_average_1m"), ("command rate /s (open loop)", "command_rate_per_s"),
            ("command completed /s", "command_completed_per_s"), ("command p50 ms", "command_p50_ms"),
            ("command p99 ms", "command_p99_ms"), ("command max ms", "command_max_ms"),
            ("  of which publish->answer p50 <= ms", "command_kafka_wait_p50_ms_le"),
            ("  of which publish->answer p99 <= ms", "command_kafka_wait_p99_ms_le"),
            ("API cores busy (commands)", "command_web_cores"), ("worker cores busy (commands)", "command_worker_cores"),
            ("client cores busy (commands)", "command_client_cores"),
            ("API CPU us per command", "command_web_cpu_us_per_command"),
            ("requests Redis did not answer", "command_redis_unavailable"),
            ("load average 1 min (commands)", "command_load_average_1m")]
    for label, key in rows:
        if result.get(key) is not None:
            value = result[key]
            print(f"  {label:32} {value:,.2f}" if isinstance(value, float) else f"  {label:32} {value:,}")
    if "command_statuses" in result:
        print(f"  {'command statuses':32} {result['command_statuses']}")


def main(argv: list[str], base: Settings) -> int:
    parser = argparse.ArgumentParser(prog="wallet bench http")
    parser.add_argument("--wallets", type=int, default=1_000, help="wallets opened, funded and read in turn")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections for the balance reads")
    parser.add_argument("--read-seconds", type=float, default=15.0, help="measured duration of each read run (0: no reads)")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="warm-up before each read run, discarded")
    parser.add_argument("--command-rate", type=int, default=1_000, help="deposits per second, open loop")
    parser.add_argument("--command-seconds", type=float, default=20.0, help="measured duration of the deposits")
    parser.add_argument("--no-commands", action="store_true", help="balance reads only")
    parser.add_argument("--profile-dir", type=Path, default=None,
                        help="py-spy the API process during the measured runs; folded stacks into this folder")
    parser.add_argument("--keep", action="store_true",
                        help="leave the namespace (topics, database, Redis database, state and logs) for inspection")
    parser.add_argument("--trace-dir", type=Path, default=None,
                        help="time every deposit through the client, API and processor (bench/latency_trace.py); "
                             "adds command_breakdown; the timers cost some CPU, so measure without it")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    if args.profile_dir:
        if _py_spy() is None:
            raise SystemExit("--profile-dir needs py-spy: .venv/bin/pip install py-spy (not a project dependency)")
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    if args.trace_dir:
        args.trace_dir = args.trace_dir.resolve()
        args.trace_dir.mkdir(parents=True, exist_ok=True)
        for old in args.trace_dir.glob("*.jsonl"):
            old.unlink()
    from ops.local import stack

    stack.up(base)
    result = run(base, args.wallets, args.connections, args.read_seconds, args.warmup_s, args.command_rate,
                 args.command_seconds, args.no_commands, args.profile_dir, keep=args.keep, trace_dir=args.trace_dir)
    _print(result)
    if "command_breakdown" in result:
        latency_trace.print_breakdown(result["command_breakdown"])
    if args.json:
        print(json.dumps(result))
    return 0
