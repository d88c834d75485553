"""Test harness for the real stack: isolated topics per test module, worker processes, readers.

Nothing here mocks a service: every helper talks to the real Kafka, registry, MariaDB and Redis that
`tests/conftest.py` starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from aiokafka import AIOKafkaProducer

from app.codec import CommandCodec, EventCodec, SchemaRegistry
from app.domain import commands as c
from app.kafka import producer_options, read_to_end
from app.settings import REPO_ROOT, Settings
# A test's namespace (topics, groups, state, ports, keys; a read model on request) is the benchmarks' too.
from wallet.isolation import free_port, isolated_settings  # noqa: F401 (the tests import them from here)

T = TypeVar("T")
WORKER_READY_TIMEOUT_S = 90.0
# Bound of reading a test's topic to its end.
READ_TOPIC_TIMEOUT_S = 60.0


def wait_for(condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.1) -> T:
    """Poll `condition` until it returns a truthy value or the deadline passes (then fail with `what`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


async def wait_for_async(condition, timeout_s: float, what: str, interval_s: float = 0.1):
    import asyncio

    deadline = time.monotonic() + timeout_s
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(interval_s)


# Every worker the tests started: the session's end kills the ones a failed test left running.
STARTED: list["WorkerProcess"] = []


def kill_leftover_workers() -> int:
    """SIGKILL every started worker still alive; return how many there were."""
    leftovers = [worker for worker in STARTED if worker.proc is not None and worker.proc.poll() is None]
    for worker in leftovers:
        worker.kill()
    STARTED.clear()
    return len(leftovers)


class WorkerProcess:
    """`wallet worker` as a real child process with the given settings."""

    def __init__(self, settings: Settings, roles: Iterable[str], *, instance: int = 0,
                 extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.roles = list(roles)
        self.instance = instance
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = settings.state_dir / f"worker-{'-'.join(self.roles)}-{instance}.log"
        self.starts = 0

    def start(self, wait_ready: bool = True) -> "WorkerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [sys.executable, "-m", "wallet.cli", "worker", "--instance", str(self.instance)]
        for role in self.roles:
            argv += ["--role", role]
        env = {**os.environ, **self.settings.to_env(), **self.extra_env}
        self.proc = subprocess.Popen(argv, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     env=env, cwd=REPO_ROOT, start_new_session=True)
        STARTED.append(self)
        self.starts += 1
        if wait_ready:
            self.wait_ready()
        return self

    def log_lines(self) -> list[str]:
        with open(self.log_path, "rb") as fh:
            fh.seek(self._log_offset)
            return fh.read().decode(errors="replace").splitlines()

    def reported_ready(self) -> bool:
        """Whether this start of the worker has logged "worker ready" (it may have died since)."""
        return any('"worker ready"' in line for line in self.log_lines())

    def wait_ready(self) -> None:
        def ready() -> bool:
            # Ready first: a worker may report ready and then die on purpose (the crash test's failpoint).
            if self.reported_ready():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n" + "\n".join(self.log_lines()[-40:]))
            return False

        try:
            wait_for(ready, WORKER_READY_TIMEOUT_S, "the worker to report ready", interval_s=0.2)
        except AssertionError:
            self.kill()  # a worker that never got ready must not outlive the test
            raise

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (the crash the tests inject)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Ledger:
    """Producer of commands and reader of events/DLQ for one isolated settings object."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = SchemaRegistry.for_settings(settings)
        self.commands = CommandCodec(self.registry, settings.commands_topic)
        self.legs = CommandCodec(self.registry, settings.transfer_legs_topic)
        self.events = EventCodec(self.registry, settings.events_topic)
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> "Ledger":
        self._producer = AIOKafkaProducer(**producer_options(self.settings))
        await self._producer.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._producer.stop()

    async def send(self, *commands: c.CommandBase, topic: str | None = None) -> None:
        topic = topic or self.settings.commands_topic
        codec = self.commands if topic == self.settings.commands_topic else self.legs
        futures = [await self._producer.send(topic, key=cmd.wallet_id.encode(), value=codec.encode(cmd))
                   for cmd in commands]
        for future in futures:
            await future

    async def send_raw(self, key: bytes | None, value: bytes | None, topic: str | None = None,
                       partition: int | None = None) -> None:
        await (await self._producer.send(topic or self.settings.commands_topic, key=key, value=value,
                                         partition=partition))

    async def read_all(self, topic: str, *, decode: bool = True) -> list:
        """Every committed record of `topic` (decoded as events when `decode`)."""
        records = await read_topic(self.settings, topic)
        if not decode:
            return records
        await self.events.ensure(r.value for r in records)
        return [self.events.decode(r.value) for r in records]


async def read_topic(settings: Settings, topic: str) -> list:
    """Every committed record of `topic` from the beginning to its current end (read_committed)."""
    return await read_to_end(settings, topic, timeout_s=READ_TOPIC_TIMEOUT_S)


def new_id(prefix: str = "w") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def now_ms() -> int:
    return int(time.time() * 1000)


def dlq_reasons(records) -> list[tuple[str, str]]:
    out = []
    for record in records:
        headers = dict(record.headers or ())
        out.append((headers.get("error.code", b"").decode(), headers.get("error.detail", b"").decode()))
    return out


def http_json(method: str, url: str, *, key: str | None = None, body: object | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    """A blocking HTTP call (urllib) returning status, headers and the decoded JSON body."""
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"{}")


def store_path(settings: Settings, partition: int, instance: int = 0) -> Path:
    """The store of `partition` kept by the processor worker in slot `instance` (wallet/worker.py member_name)."""
    from wallet.worker import member_name

    return settings.state_dir / "processor" / member_name(settings, instance) / f"p{partition}"


# Topics `create_topic` made: the session deletes them at its end with its namespaces' (tests/conftest.py).
CREATED_TOPICS: list[str] = []


def create_topic(settings: Settings, prefix: str, partitions: int = 1) -> str:
    """A fresh topic for one test (the admin client must outlive its futures)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(15)
    CREATED_TOPICS.append(name)
    return name
