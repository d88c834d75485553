"""`wallet bench failover`: how long a processor worker's partitions go without an owner when it dies or stops.

One namespace of its own (wallet/isolation.py): topics and schemas, app id (consumer group, transactional
ids), processor state, ports, and a claimed Redis database for the API. No sinks run, so no MySQL.
1. Setup (not timed): a web worker, and two processor workers without standbys
   (`processor_standby_replicas=0`) that split the partitions while the log is empty. Then N wallets are
   opened and funded by OpenWallet + Deposit commands produced onto the commands topic as one backlog, which
   the workers decide, each its own partitions; H more wallets are opened over HTTP first (the API then knows
   their currency without a read model). Setup ends when the group's committed offsets reach the end of the
   commands topic.
2. Cold takeover: deposits flow at a steady rate onto Kafka, and over HTTP; the second worker is SIGKILLed.
   The first one never stood by for its partitions (its stores of them reflect no event), so it rebuilds
   them from `wallet.events`.
3. Warm takeover: both workers restart with `processor_standby_replicas=1` (the second with a copy of the
   first's stores, made while both are stopped, so it joins warm whatever it is given); once each one's
   standby stores are caught up, the second is SIGKILLed and the first (its standby) takes over.
4. Graceful handover: the killed worker starts again, takes its share back and stands by again; then it is
   SIGTERMed (it leaves the group at once).
The warm and graceful scenarios run ROUNDS times each (the killed worker restarted in between); their
figure is the worst round.
A partition's takeover time = the record timestamp of the first outcome on it that the survivor committed
(the processor's clock when the record was appended to its transaction; the topics keep CreateTime) minus
the time the signal was sent; the figure of a scenario is its slowest partition. "The survivor's" = at or
after the survivor's own "partition assigned" log line for it, so a gracefully stopping worker's last commits
are not counted. Every scenario prints the rebalance's timeline from the workers' logs.
HTTP writes: deposits at a steady rate through each scenario, each retried with its Idempotency-Key after a
202 (no outcome within `wait_ms`), a 503 or a connection error, until it gets a 200 or HTTP_DEADLINE_S
passes; `writes_failed` counts the ones that never got a 200 (any other status ends a write as failed too).
At the end every HTTP wallet's balance is read strongly from its owner: it must hold every acknowledged deposit
once, and at most once each of the failed ones (a write whose client gave up may still have been applied).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from app.settings import REPO_ROOT, Settings

API_KEY = "bench-failover"
# Setup: producing the backlog and the workers deciding it.
SETUP_TIMEOUT_S = 3600.0
# A worker joining (and catching up its share) between scenarios; not timed.
JOIN_TIMEOUT_S = 1800.0
WORKER_READY_TIMEOUT_S = 120.0
# Standby stores this close to their partition's end count as warm before a signal is sent.
STANDBY_WARM_LAG_EVENTS = 1000
# Steady load during a scenario: deposits straight onto Kafka (what the takeover is timed on) and over HTTP.
FLOW_RATE_PER_S = 400
HTTP_RATE_PER_S = 50
HTTP_WALLETS = 40
# Flow before the signal (every partition has recent outcomes) and after the last takeover.
FLOW_BEFORE_SIGNAL_S = 5.0
FLOW_AFTER_TAKEOVER_S = 5.0
# Rounds of the warm and the graceful scenario: when the survivor hears of a rebalance depends on where its
# heartbeat cycle stands at the signal, so one round is one draw.
ROUNDS = 3
# Longest a scenario waits for the victim's partitions to commit again before it fails.
TAKEOVER_TIMEOUT_S = 600.0
# An HTTP write retried for this long (from its first send) without a 200 counts as failed. Its requests wait
# for one of HTTP_IN_FLIGHT_MAX connections within their HTTP_REQUEST_TIMEOUT_S.
HTTP_DEADLINE_S = 180.0
HTTP_RETRY_INTERVAL_S = 1.0
HTTP_REQUEST_TIMEOUT_S = 15.0
HTTP_IN_FLIGHT_MAX = 1000
# Bound of the strong balance reads at the end (each retried while its partition has no stable owner).
BALANCE_READ_DEADLINE_S = 60.0
# How long a SIGTERMed worker gets to leave before it is killed (bench/processes.py's bound).
STOP_TIMEOUT_S = 30.0
# Backlog producer (confluent-kafka: the 2N setup commands are produced from C, not from Python sends).
BACKLOG_QUEUE_FULL_WAIT_S = 0.1
# The log lines a rebalance's timeline is made of.
TIMELINE_MESSAGES = ("processor joining", "rebalance started", "partitions assigned", "assignment received",
                     "partition revoked", "partition assigned", "store restored", "worker ready",
                     "worker stopped by signal")
WORKER_SLOTS = 10  # processor workers in slots 0 and 1, the web worker in the last slot
# The rate limit is not what this measures: out of the way.
RATE_LIMIT_OUT_OF_THE_WAY_PER_S = 1_000_000


# ---------------------------------------------------------------- processes


class Worker:
    """One `wallet worker` child process (a new log file section per start), its metrics and its log lines."""

    def __init__(self, settings: Settings, roles: list[str], instance: int, env: dict[str, str] | None = None):
        self.settings = settings
        self.roles = roles
        self.instance = instance
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.name = f"{'+'.join(roles)}-{instance}"
        self.log_path = settings.state_dir / "logs" / f"{self.name}.log"
        self._log_offset = 0

    def start(self, env: dict[str, str] | None = None) -> "Worker":
        if env is not None:
            self.env = env
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [sys.executable, "-m", "wallet.cli", "worker", "--instance", str(self.instance)]
        argv += [arg for role in self.roles for arg in ("--role", role)]
        self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, env={**os.environ, **self.settings.to_env(), **self.env},
                                     stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def lines(self) -> list[dict]:
        """This start's JSON log lines (others skipped)."""
        with open(self.log_path, "rb") as fh:
            fh.seek(self._log_offset)
            out = []
            for raw in fh.read().decode(errors="replace").splitlines():
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(line, dict):
                    out.append(line)
            return out

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode if self.proc else None}; "
                               f"see {self.log_path}")

    async def wait_ready(self, timeout_s: float = WORKER_READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(line.get("msg") == "worker ready" for line in self.lines()):
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready within {timeout_s:.0f} s; see {self.log_path}")
            await asyncio.sleep(0.2)

    def signal(self, sig: int) -> float:
        """Send `sig` to the worker's process group; the wall-clock time it was sent (s since epoch)."""
        sent_at = time.time()
        os.killpg(self.proc.pid, sig)
        return sent_at

    def stop(self) -> int | None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT_S)
        return self.proc.returncode if self.proc else None

    def metric(self, name: str) -> float | None:
        """Sum of the samples named `name` on the worker's /metrics; None when it does not answer."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.settings.worker_web_port + self.instance}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)

    def owned_partitions(self) -> set[int]:
        """Partitions this start owns now, folded from its "partition assigned/revoked" lines."""
        owned: set[int] = set()
        for line in self.lines():
            if line.get("msg") == "partition assigned":
                owned.add(int(line["partition"]))
            elif line.get("msg") == "partition revoked":
                owned.discard(int(line["partition"]))
        return owned

    def assigned_after(self, after_s: float) -> dict[int, float]:
        """partition -> time (s since epoch) of this start's first "partition assigned" line after `after_s`."""
        first: dict[int, float] = {}
        for line in self.lines():
            if line.get("msg") == "partition assigned" and line["ts"] >= after_s:
                first.setdefault(int(line["partition"]), line["ts"])
        return first


def _processor_env(standby_replicas: int) -> dict[str, str]:
    return {"WALLET_PROCESSOR_STANDBY_REPLICAS": str(standby_replicas)}


async def _wait(condition, timeout_s: float, what: str, workers: list[Worker], poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        for worker in workers:
            worker.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(poll_s)


def _stable(settings: Settings, workers: list[Worker], standbys: bool) -> bool:
    """Every partition owned, every worker owning some, and (with standbys) every standby warm."""
    owned = [w.metric("wallet_processor_partitions_owned") for w in workers]
    if None in owned or sum(owned) != settings.partitions or min(owned) == 0:
        return False
    if not standbys:
        return True
    for worker in workers:
        if (worker.metric("wallet_processor_standby_partitions") or 0) == 0:
            return False
        lag = worker.metric("wallet_processor_standby_lag_events_max")
        if lag is None or lag > STANDBY_WARM_LAG_EVENTS:
            return False
    return True


# ---------------------------------------------------------------- setup


def _wallet_ids(count: int) -> list[str]:
    return [f"f{i:07d}" for i in range(count)]


def _produce_backlog(settings: Settings, wallet_ids: list[str]) -> None:
    """OpenWallet then Deposit for every wallet onto the commands topic (keyed by wallet: murmur2 partition)."""
    from confluent_kafka import Producer

    from app.codec import CommandCodec, SchemaRegistry
    from app.domain import commands as c
    from app.kafka import confluent_producer_config

    codec = CommandCodec(SchemaRegistry.for_settings(settings), settings.commands_topic)
    producer = Producer(confluent_producer_config(settings, **{"linger.ms": 50, "batch.size": 1_000_000}))
    errors: list[str] = []

    def delivered(err, msg) -> None:
        if err is not None:
            errors.append(str(err))

    ts = int(time.time() * 1000)
    for kind in ("open", "fund"):
        for wallet_id in wallet_ids:
            if kind == "open":
                command = c.OpenWallet(command_id=f"open-{wallet_id}", wallet_id=wallet_id, timestamp_ms=ts,
                                       owner_id="bench", currency="EUR")
            else:
                command = c.Deposit(command_id=f"fund-{wallet_id}", wallet_id=wallet_id, timestamp_ms=ts,
                                    amount_minor=1_000_000, currency="EUR")
            value = codec.encode(command)
            while True:
                try:
                    producer.produce(settings.commands_topic, key=wallet_id.encode(), value=value,
                                     on_delivery=delivered)
                    break
                except BufferError:  # librdkafka's queue is full: let it deliver some
                    producer.poll(BACKLOG_QUEUE_FULL_WAIT_S)
            producer.poll(0)
    if producer.flush(120) or errors:
        raise RuntimeError(f"backlog not delivered: {errors[:3]}")


def _backlog_decided(settings: Settings) -> bool:
    """Whether the processor group's committed offsets reached the end of every commands partition."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.app_id}-processor",
                         "enable.auto.commit": False})
    try:
        tps = [TopicPartition(settings.commands_topic, p) for p in range(settings.partitions)]
        committed = consumer.committed(tps, timeout=10)
        for tp in committed:
            _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
            if tp.offset < high:
                return False
        return True
    finally:
        consumer.close()


async def _open_http_wallets(base_url: str, wallet_ids: list[str]) -> None:
    import aiohttp

    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=HTTP_REQUEST_TIMEOUT_S)) as session:
        for wallet_id in wallet_ids:
            deadline = time.monotonic() + HTTP_DEADLINE_S
            while True:
                async with session.post(f"{base_url}/v1/wallets", headers={"Idempotency-Key": f"open-{wallet_id}"},
                                        json={"wallet_id": wallet_id, "owner_id": "bench", "currency": "EUR"}) as resp:
                    if resp.status == 201:
                        break
                    if resp.status not in (202, 503) or time.monotonic() > deadline:
                        raise RuntimeError(f"POST /v1/wallets {wallet_id}: {resp.status} {await resp.text()}")
                await asyncio.sleep(HTTP_RETRY_INTERVAL_S)


# ---------------------------------------------------------------- load during a scenario


class Outcomes:
    """Tails the events topic (read_committed) and keeps each partition's record timestamps (ms)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timestamps_ms: dict[int, list[int]] = {p: [] for p in range(settings.partitions)}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from app.kafka import consumer_options

        self._consumer = AIOKafkaConsumer(**consumer_options(self.settings, None))
        await self._consumer.start()
        tps = [TopicPartition(self.settings.events_topic, p) for p in range(self.settings.partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        self.start_offsets = {tp.partition: await self._consumer.position(tp) for tp in tps}
        self._task = asyncio.create_task(self._tail())

    async def _tail(self) -> None:
        while True:
            for tp, records in (await self._consumer.getmany(timeout_ms=100, max_records=10_000)).items():
                self.timestamps_ms[tp.partition].extend(record.timestamp for record in records)

    def first_at_or_after(self, partition: int, at_ms: int) -> int | None:
        return next((ts for ts in self.timestamps_ms[partition] if ts >= at_ms), None)

    def largest_gap_s(self, partition: int, from_ms: int, to_ms: int) -> float:
        """The longest stretch without an outcome on `partition` between `from_ms` and `to_ms` (s)."""
        stamps = sorted(ts for ts in self.timestamps_ms[partition] if from_ms <= ts <= to_ms)
        points = [from_ms, *stamps, to_ms]
        return max(b - a for a, b in zip(points, points[1:])) / 1000

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        await self._consumer.stop()


@dataclass
class HttpWrites:
    """Deposits over HTTP, each until a 200 (retrying 202/503/connection errors with its key) or the deadline."""

    base_url: str
    wallet_ids: list[str]
    acknowledged: dict[str, int] = field(default_factory=dict)  # wallet -> deposits that got a 200
    failed: list[tuple[str, str]] = field(default_factory=list)  # (idempotency key, last status)
    failed_by_wallet: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    sent: int = 0
    _tasks: list[asyncio.Task] = field(default_factory=list)

    async def __aenter__(self) -> "HttpWrites":
        import aiohttp

        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {API_KEY}"},
            connector=aiohttp.TCPConnector(limit=HTTP_IN_FLIGHT_MAX),
            timeout=aiohttp.ClientTimeout(total=HTTP_REQUEST_TIMEOUT_S))
        return self

    async def __aexit__(self, *exc) -> None:
        await self._session.close()

    def send(self, n: int) -> None:
        wallet_id = self.wallet_ids[n % len(self.wallet_ids)]
        self.sent += 1
        self._tasks.append(asyncio.create_task(self._until_200(wallet_id, f"fo-{uuid.uuid4().hex}")))

    async def _until_200(self, wallet_id: str, key: str) -> None:
        import aiohttp

        deadline = time.monotonic() + HTTP_DEADLINE_S
        status = "none"
        while time.monotonic() < deadline:
            self.attempts += 1
            try:
                async with self._session.post(f"{self.base_url}/v1/wallets/{wallet_id}/deposits",
                                              json={"amount": "0.01"}, headers={"Idempotency-Key": key}) as resp:
                    await resp.read()
                    status = str(resp.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                status = type(exc).__name__
            if status == "200":
                self.acknowledged[wallet_id] = self.acknowledged.get(wallet_id, 0) + 1
                return
            if status not in ("202", "503") and status.isdigit():
                break  # an answer that retrying does not change
            await asyncio.sleep(HTTP_RETRY_INTERVAL_S)
        self.failed.append((key, status))
        self.failed_by_wallet[wallet_id] = self.failed_by_wallet.get(wallet_id, 0) + 1

    async def settle(self) -> None:
        """Wait for every write sent so far to end (200, failure or deadline)."""
        tasks, self._tasks = self._tasks, []
        await asyncio.gather(*tasks)


async def _steady(rate_per_s: int, act, stop: asyncio.Event) -> None:
    """Call act(n) at `rate_per_s` until `stop` is set (open loop: a slow act does not slow the schedule)."""
    started = time.monotonic()
    n = 0
    while not stop.is_set():
        await act(n) if asyncio.iscoroutinefunction(act) else act(n)
        n += 1
        delay = started + n / rate_per_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


# ---------------------------------------------------------------- one scenario


def _timeline(signal_at: float, workers: list[Worker], until: float) -> list[str]:
    rows = []
    for worker in workers:
        for line in worker.lines():
            if line.get("msg") in TIMELINE_MESSAGES and signal_at - 1 <= line.get("ts", 0) <= until:
                detail = {k: line[k] for k in ("partition", "events", "seconds", "owners", "members") if k in line}
                rows.append((line["ts"], f"{line['ts'] - signal_at:+8.3f} s  {worker.name:12} {line['msg']} "
                                         f"{json.dumps(detail) if detail else ''}".rstrip()))
    return [text for _, text in sorted(rows)]


async def _scenario(name: str, settings: Settings, victim: Worker, survivor: Worker, sig: int,
                    wallet_ids: list[str], http: HttpWrites, flow_rate_per_s: int, http_rate_per_s: int) -> dict:
    """Flow, signal `victim`, wait until each of its partitions committed an outcome on `survivor`; figures."""
    from aiokafka import AIOKafkaProducer

    from app.codec import CommandCodec, SchemaRegistry
    from app.domain import commands as c
    from app.kafka import producer_options

    codec = CommandCodec(SchemaRegistry.for_settings(settings), settings.commands_topic)
    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    outcomes = Outcomes(settings)
    await outcomes.start()
    rng = random.Random(name)
    deliveries: list[asyncio.Future] = []

    async def deposit(n: int) -> None:
        wallet_id = rng.choice(wallet_ids)
        command = c.Deposit(command_id=f"flow-{name}-{n}", wallet_id=wallet_id, timestamp_ms=int(time.time() * 1000),
                            amount_minor=1, currency="EUR")
        deliveries.append(await producer.send(settings.commands_topic, key=wallet_id.encode(),
                                              value=codec.encode(command)))

    stop = asyncio.Event()
    flows = [asyncio.create_task(_steady(flow_rate_per_s, deposit, stop)),
             asyncio.create_task(_steady(http_rate_per_s, http.send, stop))]
    http_sent_before, failed_before = http.sent, len(http.failed)
    rebalance_sum_before = survivor.metric("wallet_processor_rebalance_seconds_sum") or 0.0
    try:
        await asyncio.sleep(FLOW_BEFORE_SIGNAL_S)
        victim_partitions = sorted(victim.owned_partitions())
        survivor_partitions = sorted(survivor.owned_partitions())
        if not victim_partitions:
            raise RuntimeError(f"{name}: {victim.name} owns no partition; nothing to take over")
        signal_at = victim.signal(sig)
        signal_ms = int(signal_at * 1000)

        def taken_over() -> dict[int, int] | None:
            assigned = survivor.assigned_after(signal_at)
            firsts = {}
            for p in victim_partitions:
                if p not in assigned:
                    return None
                first = outcomes.first_at_or_after(p, int(assigned[p] * 1000) - 1)
                if first is None:
                    return None
                firsts[p] = first
            return firsts

        deadline = time.monotonic() + TAKEOVER_TIMEOUT_S
        while (firsts := taken_over()) is None:
            survivor.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: partitions {victim_partitions} not taken over within "
                                   f"{TAKEOVER_TIMEOUT_S:.0f} s; see {survivor.log_path}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(FLOW_AFTER_TAKEOVER_S)
    finally:
        stop.set()
        await asyncio.gather(*flows)
    await asyncio.gather(*deliveries)
    await producer.stop()
    end_ms = int(time.time() * 1000)
    victim_exit = await asyncio.to_thread(victim.proc.wait, STOP_TIMEOUT_S)
    await outcomes.stop()
    per_partition_s = {p: round((ts - signal_ms) / 1000, 3) for p, ts in firsts.items()}
    survivor_gap_s = {p: round(outcomes.largest_gap_s(p, signal_ms, end_ms), 3) for p in survivor_partitions}
    rebalance_sum_after = survivor.metric("wallet_processor_rebalance_seconds_sum") or 0.0
    timeline = _timeline(signal_at, [victim, survivor], end_ms / 1000)
    restored: dict[int, list] = {}  # partition -> [events, seconds] of each catch-up (a rejoin adds one)
    for line in survivor.lines():
        if line.get("msg") == "store restored" and line["ts"] >= signal_at:
            restored.setdefault(int(line["partition"]), []).append([line.get("events"), line.get("seconds")])
    await http.settle()
    return {"takeover_s": max(per_partition_s.values()), "partitions": per_partition_s,
            "survivor_partitions_longest_gap_s": survivor_gap_s,
            "survivor_rebalance_s": round(rebalance_sum_after - rebalance_sum_before, 3),
            "restored": restored,
            "victim_log_offsets": {p: outcomes.start_offsets[p] for p in victim_partitions},
            "victim_exit": victim_exit, "http_writes": http.sent - http_sent_before,
            "http_failed": len(http.failed) - failed_before, "timeline": timeline}


# ---------------------------------------------------------------- the run


async def _balances(base_url: str, http: HttpWrites) -> dict:
    """Each HTTP wallet's balance (strong read) against its writes, in deposits of 0.01: `consistent` when
    every wallet holds each acknowledged deposit and at most each failed one once more; `failed_applied` is
    how many writes whose client gave up were applied anyway."""
    import aiohttp

    consistent, failed_applied = True, 0
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"},
                                     timeout=aiohttp.ClientTimeout(total=HTTP_REQUEST_TIMEOUT_S)) as session:
        for wallet_id in http.wallet_ids:
            acknowledged = http.acknowledged.get(wallet_id, 0)
            failed = http.failed_by_wallet.get(wallet_id, 0)
            deadline = time.monotonic() + BALANCE_READ_DEADLINE_S
            while True:
                async with session.get(f"{base_url}/v1/wallets/{wallet_id}/balance?consistency=strong") as resp:
                    body = await resp.json(content_type=None)
                    if resp.status == 200:
                        deposits = int(Decimal(body["balance"]) * 100)
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{wallet_id}: strong read answered {resp.status} for "
                                       f"{BALANCE_READ_DEADLINE_S:.0f} s")
                await asyncio.sleep(HTTP_RETRY_INTERVAL_S)
            if not acknowledged <= deposits <= acknowledged + failed:
                print(f"  {wallet_id}: {deposits} deposits applied, {acknowledged} acknowledged, {failed} failed",
                      file=sys.stderr)
                consistent = False
            failed_applied += max(0, deposits - acknowledged)
    return {"http_balances_consistent": consistent, "http_failed_applied": failed_applied}


async def run(settings: Settings, wallets: int, flow_rate_per_s: int, http_rate_per_s: int,
              scenarios: list[str], rounds: int) -> dict:
    wallet_ids = _wallet_ids(wallets)
    http_wallet_ids = [f"hf{i:03d}" for i in range(HTTP_WALLETS)]
    base_url = f"http://127.0.0.1:{settings.http_port}"
    # Cold first: the two workers split the partitions before the backlog exists and never stand by for each
    # other, so at the kill the survivor holds nothing of the victim's partitions (an empty store at most).
    first = Worker(settings, ["processor"], 0, _processor_env(0))
    second = Worker(settings, ["processor"], 1, _processor_env(0))
    web = Worker(settings, ["web"], WORKER_SLOTS - 1)
    processors = [first, second]
    result: dict = {"wallets": wallets, "partitions": settings.partitions,
                    "session_timeout_ms": settings.processor_session_timeout_ms,
                    "flow_rate_per_s": flow_rate_per_s, "http_rate_per_s": http_rate_per_s}
    details: dict = {}
    try:
        setup_started = time.monotonic()
        web.start()
        first.start()
        await first.wait_ready()
        second.start()
        await second.wait_ready()
        await web.wait_ready()
        await _wait(lambda: _stable(settings, processors, standbys=False), JOIN_TIMEOUT_S,
                    "the two workers to split the partitions", processors)
        await _open_http_wallets(base_url, http_wallet_ids)
        await asyncio.to_thread(_produce_backlog, settings, wallet_ids)
        result["backlog_produced_s"] = round(time.monotonic() - setup_started, 1)
        await _wait(lambda: _backlog_decided(settings), SETUP_TIMEOUT_S, "the backlog to be decided", processors)
        result["setup_s"] = round(time.monotonic() - setup_started, 1)
        print(f"setup: {wallets:,} wallets in {result['setup_s']} s", flush=True)

        async with HttpWrites(base_url, http_wallet_ids) as http:
            if "cold" in scenarios:
                details["cold"] = [await _scenario("cold", settings, second, first, signal.SIGKILL, wallet_ids,
                                                   http, flow_rate_per_s, http_rate_per_s)]
                result["takeover_cold_s"] = details["cold"][0]["takeover_s"]
                _report("cold takeover (SIGKILL, standby replicas 0, survivor without a store of them)",
                        details["cold"][0])
            if {"warm", "graceful"} & set(scenarios):
                # Standbys from here on. The second worker gets a copy of the first one's stores while both are
                # stopped, so whichever partitions the group gives it, it joins warm (a catch-up inside the
                # rebalance callback longer than the session gets a member evicted; see docs/BENCHMARKS.md).
                first.stop()
                second.stop()
                _copy_stores(settings, first, second)
                first.start(_processor_env(1))
                await first.wait_ready()
                second.start(_processor_env(1))
                await second.wait_ready()
                await _wait(lambda: _stable(settings, processors, standbys=True), JOIN_TIMEOUT_S,
                            "both workers to own partitions and keep warm standbys", processors)
            for name, sig, title in (("warm", signal.SIGKILL, "warm takeover (SIGKILL, standby replicas 1)"),
                                     ("graceful", signal.SIGTERM, "graceful handover (SIGTERM, standby replicas 1)")):
                if name not in scenarios:
                    continue
                details[name] = []
                for round_ in range(rounds):
                    figures = await _scenario(f"{name}-{round_}", settings, second, first, sig, wallet_ids, http,
                                              flow_rate_per_s, http_rate_per_s)
                    details[name].append(figures)
                    _report(f"{title}, round {round_ + 1} of {rounds}", figures)
                    second.start()
                    await second.wait_ready()
                    await _wait(lambda: _stable(settings, processors, standbys=True), JOIN_TIMEOUT_S,
                                "the restarted worker to own partitions and standbys to be warm", processors)
                key = "takeover_warm_s" if name == "warm" else "graceful_handover_s"
                result[key] = max(figures["takeover_s"] for figures in details[name])  # the worst round
            await http.settle()
            result["http_writes"] = http.sent
            result["http_attempts"] = http.attempts
            result["writes_failed"] = len(http.failed)
            if http.failed:
                print(f"  failed writes (key, last status): {http.failed[:10]}", file=sys.stderr)
            result.update(await _balances(base_url, http))
    finally:
        for worker in (*processors, web):
            worker.stop()
    result["details"] = {name: [{k: v for k, v in figures.items() if k != "timeline"} for figures in rounds_]
                         for name, rounds_ in details.items()}
    return result


def _copy_stores(settings: Settings, source: Worker, target: Worker) -> None:
    """Replace `target`'s stores with copies of `source`'s (both stopped: RocksDB folders closed)."""
    from wallet.worker import member_name

    root = settings.state_dir / "processor"
    source_root, target_root = (root / member_name(settings, w.instance) for w in (source, target))
    shutil.rmtree(target_root, ignore_errors=True)
    shutil.copytree(source_root, target_root)


def _report(title: str, figures: dict) -> None:
    print(f"\n{title}: {figures['takeover_s']:.3f} s (per partition {figures['partitions']}); survivor's own "
          f"partitions' longest gap {figures['survivor_partitions_longest_gap_s']}; HTTP writes "
          f"{figures['http_writes']}, failed {figures['http_failed']}", flush=True)
    for row in figures["timeline"]:
        print("   ", row)


SCENARIOS = ("warm", "graceful", "cold")


def main(argv: list[str], base: Settings) -> int:
    parser = argparse.ArgumentParser(prog="wallet bench failover")
    parser.add_argument("--wallets", type=int, default=1_000_000, help="wallets opened and funded in setup")
    parser.add_argument("--rate", type=int, default=FLOW_RATE_PER_S, help="deposits/s onto Kafka during a scenario")
    parser.add_argument("--http-rate", type=int, default=HTTP_RATE_PER_S, help="deposits/s over HTTP during a scenario")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help="rounds of the warm and of the graceful scenario (the figure is the worst)")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="run only these (repeatable)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the namespace behind (topics, Redis database, state and the workers' logs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    from ops.local import stack
    from wallet import isolation

    stack.up(base)
    # Below the ephemeral range (wallet/isolation.py): an outgoing connection never takes one of them.
    ports = isolation.free_port_block(WORKER_SLOTS + 1)
    settings = isolation.isolated_settings(
        base, "failover", folder="bench", api_keys=f"{API_KEY}=wallets:read+wallets:write",
        rate_limit_per_s=RATE_LIMIT_OUT_OF_THE_WAY_PER_S, rate_limit_burst=RATE_LIMIT_OUT_OF_THE_WAY_PER_S,
        worker_web_port=ports, http_port=ports + WORKER_SLOTS)
    finished = False
    try:
        settings = isolation.claim_redis_database(isolation.prepare_topics(settings))
        result = asyncio.run(run(settings, args.wallets, args.rate, args.http_rate, args.scenario or list(SCENARIOS),
                                 args.rounds))
        finished = True
    finally:
        if args.keep:
            print(f"bench: kept namespace {settings.app_id}: topics {settings.app_id}.*, {settings.redis_url}, "
                  f"state and logs {settings.state_dir}", flush=True)
        else:  # the state folder, with the workers' logs, stays when the run failed
            isolation.discard(settings, redis_claimed=True, state=finished)
    result = {"namespace": settings.app_id, **result}
    print(f"\nfailover benchmark ({result['wallets']:,} wallets, {result['partitions']} partitions)")
    for label, key in [("takeover, warm standby (s)", "takeover_warm_s"), ("takeover, cold (s)", "takeover_cold_s"),
                       ("graceful handover (s)", "graceful_handover_s"), ("HTTP writes", "http_writes"),
                       ("HTTP writes failed", "writes_failed"), ("setup (s)", "setup_s")]:
        if key in result:
            print(f"  {label:30} {result[key]}")
    if args.json:
        print(json.dumps(result))
    return 0
