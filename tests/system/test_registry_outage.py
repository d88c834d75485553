"""A schema-registry outage, seen by whole workers: held messages, an honest gauge, a prompt SIGTERM.

Workers reach the real registry (127.0.0.1:8081) through a TCP proxy the test switches: `closed` (every
connection closed at once: the registry is down), `silent` (connections accepted and never answered: a hung
registry) and `on`. tests/integration/test_registry_faults.py covers one processor worker; here:
- two processor workers, each a standby of the other's partitions (the default): the worker whose batch
  waits for the schema of a new command version reports `wallet_registry_waiting` 1 at every scrape, though
  its standby keeps reading events all the while; nothing is dead-lettered or decided until the registry
  answers, then each command gets exactly one outcome;
- a sinks process: an event of a new event schema version (a newer worker's) waits, then reaches both
  read models;
- a worker whose registry request hangs stops at once on SIGTERM (no thread left waiting for an answer).
"""

from __future__ import annotations

import asyncio
import io
import re
import signal
import threading
import urllib.request
import uuid
from dataclasses import replace

import fastavro
import pytest

from app.codec import HEADER, MAGIC_BYTE, SchemaRegistry, load_schema
from app.domain import commands as c
from app.domain.ledger import decide
from app.kafka import partition_for
from readside.redis import make_client, wallet_key
from tests.conftest import prepare_topics
from tests.harness import (Ledger, WorkerProcess, dlq_reasons, isolated_settings, new_id, now_ms, read_topic,
                           wait_for, wait_for_async)
from wallet import isolation
from wallet.worker import view_port

# Bounds of the waits below (the machine is small and shared).
WAITING_SEEN_TIMEOUT_S = 60
OUTCOMES_TIMEOUT_S = 90
# A SIGTERM'd worker must be gone within this; a thread blocked in a registry request would hold the exit for
# the request timeout (10 s) times the client's retries.
STOP_PROMPT_S = 8
# Scrapes of the waiting gauge that must all read 1 while the registry is down, and the pause between them
# (the sinks poll every sink_batch_wait_ms, 50 ms: several of their batches fall between two scrapes).
GAUGE_SCRAPES = 8
GAUGE_SCRAPE_INTERVAL_S = 0.3
# Registry requests the worker must have retried, and failed, before the test looks at what it held.
FAILED_REQUESTS_MIN = 4
PROXY_CHUNK_BYTES = 65536


class RegistryProxy:
    """A TCP proxy on 127.0.0.1 in front of the real registry, in a thread with its own event loop (so the
    test's blocking waits never starve it). Modes: `on` (forward), `closed` (every connection, old or new,
    is closed at once), `silent` (connections are accepted, read and never answered). `requests` keeps the
    first line of every request seen while silent."""

    def __init__(self, registry_url: str) -> None:
        self.host_port = registry_url.split("://", 1)[1].split("/", 1)[0]
        host, port = self.host_port.rsplit(":", 1)
        self.target = (host, int(port))
        self.registry_url = registry_url
        self.mode = "on"
        self.port = 0
        self.requests: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="registry-proxy", daemon=True)

    @property
    def url(self) -> str:
        """The registry's URL through this proxy."""
        return self.registry_url.replace(self.host_port, f"127.0.0.1:{self.port}")

    def start(self) -> "RegistryProxy":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def switch(self, mode: str) -> None:
        async def apply() -> None:
            self.mode = mode
            if mode != "on":
                for writer in list(self._writers):
                    writer.close()
        asyncio.run_coroutine_threadsafe(apply(), self._loop).result(10)

    def close(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.mode == "closed":
                return
            if self.mode == "silent":
                first = True
                while data := await reader.read(PROXY_CHUNK_BYTES):
                    if first:
                        self.requests.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))
                        first = False
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            try:
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(PROXY_CHUNK_BYTES):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


class NewSchemaWriter:
    """Encodes commands (or events) with a schema version registered just now (a unique doc: new content,
    so a new id) under a subject of its own, straight at the real registry."""

    def __init__(self, registry_url: str, ledger: Ledger, *, events: bool = False) -> None:
        self.schema = load_schema("wallet_event" if events else "wallet_command")
        self.schema["doc"] = f"{self.schema.get('doc', '')} (registry outage test {uuid.uuid4().hex})"
        self.schema_id = SchemaRegistry(registry_url).register(f"registry-outage-{uuid.uuid4().hex[:8]}-value",
                                                               self.schema)
        self.parsed = fastavro.parse_schema(self.schema)
        self.codec = ledger.events if events else ledger.commands

    def encode(self, obj) -> bytes:
        out = io.BytesIO()
        out.write(HEADER.pack(MAGIC_BYTE, self.schema_id))
        fastavro.schemaless_writer(out, self.parsed, self.codec.to_record(obj))
        return out.getvalue()


def _sample(worker: WorkerProcess, pattern: str) -> float:
    """The sum of the worker's exported samples whose `name{labels}` matches `pattern` (0 when none)."""
    url = f"http://127.0.0.1:{view_port(worker.settings, set(worker.roles), worker.instance)}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            if re.fullmatch(pattern, name):
                total += float(value)
    return total


FAILURES = r"wallet_registry_fetch_failures_total(\{.*\})?"
WAITING = "wallet_registry_waiting"


async def _dead_letters(settings, keys: set[bytes]) -> list[tuple[str, str]]:
    return dlq_reasons([r for r in await read_topic(settings, settings.dlq_topic) if r.key in keys])


async def _outcomes(ledger: Ledger, command_ids: set[str]) -> dict[str, int]:
    counts = {command_id: 0 for command_id in command_ids}
    for event in await ledger.read_all(ledger.settings.events_topic):
        if event.command_id in counts:
            counts[event.command_id] += 1
    return counts


@pytest.fixture
def proxy(stack):
    proxy = RegistryProxy(stack.registry_url).start()
    yield proxy
    proxy.close()


async def test_a_processor_waiting_for_the_registry_says_so_at_every_scrape_while_its_standby_keeps_tailing(
        stack, proxy):
    settings = prepare_topics(isolated_settings(stack, "registry-outage"))
    through_proxy = replace(settings, registry_url=proxy.url)
    workers = [WorkerProcess(through_proxy, ["processor"], instance=i) for i in range(2)]
    try:
        for worker in workers:
            worker.start()
        wait_for(lambda: all(_sample(w, "wallet_processor_standby_partitions") > 0 for w in workers),
                 WAITING_SEEN_TIMEOUT_S, "each worker to stand by for the other's partitions", interval_s=0.5)
        async with Ledger(settings) as ledger:
            commands_v2 = NewSchemaWriter(stack.registry_url, ledger)
            wallet_id = new_id("ro")
            ts = now_ms()
            commands = [c.OpenWallet(command_id=new_id("ro-open"), wallet_id=wallet_id, timestamp_ms=ts,
                                     owner_id="o", currency="EUR"),
                        c.Deposit(command_id=new_id("ro-dep"), wallet_id=wallet_id, timestamp_ms=ts,
                                  amount_minor=700, currency="EUR")]
            command_ids = {command.command_id for command in commands}
            failures_before = [_sample(w, FAILURES) for w in workers]

            proxy.switch("closed")
            for command in commands:
                await ledger.send_raw(wallet_id.encode(), commands_v2.encode(command))

            def waiting_worker():
                if not all(w.alive() for w in workers):
                    raise AssertionError("a worker exited while the registry was down")
                return next((w for w, before in zip(workers, failures_before)
                             if _sample(w, FAILURES) >= before + FAILED_REQUESTS_MIN), None)

            owner = wait_for(waiting_worker, WAITING_SEEN_TIMEOUT_S, "the owner of the wallet to retry the registry",
                             interval_s=0.5)
            scrapes = []
            for _ in range(GAUGE_SCRAPES):
                scrapes.append(_sample(owner, WAITING))
                await asyncio.sleep(GAUGE_SCRAPE_INTERVAL_S)  # spacing the scrapes, not waiting for a result
            assert scrapes == [1.0] * GAUGE_SCRAPES, "the worker waits for the registry at every one of them"
            assert await _dead_letters(settings, {wallet_id.encode()}) == []
            assert set((await _outcomes(ledger, command_ids)).values()) == {0}
            assert any("schema registry unavailable" in line for line in owner.log_lines())

            proxy.switch("on")

            async def all_decided():
                counts = await _outcomes(ledger, command_ids)
                return counts if all(counts.values()) else None

            counts = await wait_for_async(all_decided, OUTCOMES_TIMEOUT_S, "every command's outcome", interval_s=0.5)
            assert counts == {command_id: 1 for command_id in command_ids}
            assert await _dead_letters(settings, {wallet_id.encode()}) == []
            wait_for(lambda: _sample(owner, WAITING) == 0, WAITING_SEEN_TIMEOUT_S, "the gauge back at 0",
                     interval_s=0.5)
    finally:
        proxy.switch("on")
        codes = [worker.stop() for worker in workers]
        isolation.discard(settings)
    assert codes == [0, 0]


async def test_the_sinks_hold_an_event_of_a_new_schema_through_an_outage_and_project_it_once_it_answers(
        stack, proxy):
    settings = isolation.claim_redis_database(isolation.with_database(
        prepare_topics(isolated_settings(stack, "registry-sinks"))))
    sinks = WorkerProcess(replace(settings, registry_url=proxy.url), ["sinks"])
    redis = make_client(settings.redis_url)
    try:
        sinks.start()
        async with Ledger(settings) as ledger:
            events_v2 = NewSchemaWriter(stack.registry_url, ledger, events=True)
            wallet_id = new_id("ro-event")
            ts = now_ms()
            [opened] = decide(None, c.OpenWallet(command_id=new_id("ro-open"), wallet_id=wallet_id,
                                                 timestamp_ms=ts, owner_id="o", currency="EUR"), ts)
            failures_before = _sample(sinks, FAILURES)
            proxy.switch("closed")
            await ledger.send_raw(wallet_id.encode(), events_v2.encode(opened), topic=settings.events_topic,
                                  partition=partition_for(wallet_id.encode(), settings.partitions))

            def retried_or_exited():
                return not sinks.alive() or (_sample(sinks, FAILURES) >= failures_before + FAILED_REQUESTS_MIN
                                             and _sample(sinks, WAITING) == 1)

            wait_for(retried_or_exited, WAITING_SEEN_TIMEOUT_S, "the sinks to wait for the registry", interval_s=0.5)
            assert sinks.alive(), "\n".join(sinks.log_lines()[-20:])
            assert _sample(sinks, r"wallet_sink_events_total\{.*\}") == 0
            assert not await redis.exists(wallet_key(wallet_id))

            proxy.switch("on")

            async def projected():
                return await redis.exists(wallet_key(wallet_id)) and _sample(
                    sinks, r'wallet_sink_events_total\{sink="mysql"\}') == 1

            await wait_for_async(projected, OUTCOMES_TIMEOUT_S, "the event in both read models", interval_s=0.5)
            wait_for(lambda: _sample(sinks, WAITING) == 0, WAITING_SEEN_TIMEOUT_S, "the gauge back at 0",
                     interval_s=0.5)
    finally:
        await redis.aclose()
        proxy.switch("on")
        code = sinks.stop()
        isolation.discard(settings, database=True, redis_claimed=True)
    assert code == 0


async def test_a_worker_whose_registry_request_hangs_stops_promptly_on_sigterm(stack, proxy):
    settings = prepare_topics(isolated_settings(stack, "registry-hung"))
    worker = WorkerProcess(replace(settings, registry_url=proxy.url), ["processor"]).start()
    try:
        async with Ledger(settings) as ledger:
            commands_v2 = NewSchemaWriter(stack.registry_url, ledger)
            wallet_id = new_id("rh")
            command = c.OpenWallet(command_id=new_id("rh-open"), wallet_id=wallet_id, timestamp_ms=now_ms(),
                                   owner_id="o", currency="EUR")
            proxy.switch("silent")
            await ledger.send_raw(wallet_id.encode(), commands_v2.encode(command))
            wait_for(lambda: any(f"/schemas/ids/{commands_v2.schema_id}" in line for line in proxy.requests),
                     WAITING_SEEN_TIMEOUT_S, "the worker to ask the hung registry for the new id", interval_s=0.2)
            worker.proc.send_signal(signal.SIGTERM)  # to the worker itself, as a supervisor sends it
            wait_for(lambda: not worker.alive(), STOP_PROMPT_S, "the worker to exit on SIGTERM", interval_s=0.2)
            assert worker.proc.returncode == 0
            assert await _dead_letters(settings, {wallet_id.encode()}) == []
    finally:
        proxy.switch("on")
        worker.stop()
        isolation.discard(settings)


START_WAIT_LINE = "schema registry unavailable at start-up; waiting"
# Start-up retries the worker must have logged (and survived) before the registry comes back.
START_RETRIES_MIN = 3


def _start_waits(worker: WorkerProcess) -> int:
    return sum(START_WAIT_LINE in line for line in worker.log_lines())


async def test_a_worker_started_while_the_registry_is_down_waits_for_it_and_then_decides(stack, proxy):
    # Before: the codecs registered their schemas at start-up with a blocking call that raised, and the worker
    # exited with status 1 (`make run` gives up after 5 such exits in a row).
    settings = prepare_topics(isolated_settings(stack, "registry-start"))
    proxy.switch("closed")
    worker = WorkerProcess(replace(settings, registry_url=proxy.url), ["processor"]).start(wait_ready=False)
    try:
        wait_for(lambda: _start_waits(worker) >= START_RETRIES_MIN or not worker.alive(), WAITING_SEEN_TIMEOUT_S,
                 f"{START_RETRIES_MIN} start-up waits for the registry", interval_s=0.2)
        assert worker.alive(), "\n".join(worker.log_lines()[-30:])
        proxy.switch("on")
        worker.wait_ready()
        async with Ledger(settings) as ledger:
            command = c.OpenWallet(command_id=new_id("rs-open"), wallet_id=new_id("rs"), timestamp_ms=now_ms(),
                                   owner_id="o", currency="EUR")
            await ledger.send(command)
            counts = await wait_for_async(lambda: _decided(ledger, {command.command_id}), OUTCOMES_TIMEOUT_S,
                                          "the command's outcome")
            assert counts == {command.command_id: 1}
    finally:
        proxy.switch("on")
        worker.stop()
        isolation.discard(settings)


async def _decided(ledger: Ledger, command_ids: set[str]) -> dict[str, int] | None:
    counts = await _outcomes(ledger, command_ids)
    return counts if all(counts.values()) else None


async def test_a_worker_waiting_for_the_registry_at_start_up_stops_promptly_on_sigterm(stack, proxy):
    settings = prepare_topics(isolated_settings(stack, "registry-start-stop"))
    proxy.switch("silent")  # a hung registry: the request itself must be cancelled
    worker = WorkerProcess(replace(settings, registry_url=proxy.url), ["processor"]).start(wait_ready=False)
    try:
        wait_for(lambda: any("/subjects/" in line for line in proxy.requests), WAITING_SEEN_TIMEOUT_S,
                 "the worker to ask the hung registry to register a schema", interval_s=0.2)
        worker.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: not worker.alive(), STOP_PROMPT_S, "the worker to exit on SIGTERM", interval_s=0.2)
        assert worker.proc.returncode == 0
    finally:
        proxy.switch("on")
        worker.stop()
        isolation.discard(settings)
