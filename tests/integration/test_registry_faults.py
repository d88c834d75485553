"""A schema registry that does not answer is a transient fault, not poison (real registry behind a proxy).

The processor reaches the real registry through a TCP proxy the test can switch off. A producer starts
writing commands with a schema version the processor has never seen; while the registry is unreachable they
wait (no outcome, nothing in the DLQ, `wallet_registry_waiting` is 1); once it answers, each gets exactly one
outcome. A schema id the registry really does not know is still `UNKNOWN_SCHEMA` poison.
"""

from __future__ import annotations

import asyncio
import copy
import io
import urllib.request
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import fastavro
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.codec import HEADER, SchemaRegistry, load_schema
from app.domain import commands as c
from app.domain import events as e
from tests.conftest import prepare_topics
from tests.harness import Ledger, WorkerProcess, dlq_reasons, free_port, isolated_settings, new_id, now_ms, \
    wait_for_async

WAIT_S = 60
# How long the registry stays down while commands wait (long enough for several backoff rounds).
DOWN_S = 4.0


class SwitchableProxy:
    """A TCP proxy to `target`; while off it closes every connection at once (the registry looks down)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.on = True
        self.port = free_port()
        self._server: asyncio.AbstractServer | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def switch_off(self) -> None:
        """Refuse new connections and cut the open ones (a client's keep-alive connection included)."""
        self.on = False
        for writer in list(self._open):
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.on:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._open.update((writer, up_writer))

        async def pipe(source, sink) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                sink.close()
                self._open.discard(sink)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def _worker_metric(settings, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.worker_web_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


@pytest.fixture
async def proxied(stack):
    registry = urlsplit(stack.registry_url)
    proxy = SwitchableProxy(registry.hostname, registry.port)
    await proxy.start()
    url = urlunsplit((registry.scheme, f"127.0.0.1:{proxy.port}", registry.path, "", ""))
    # Topics and schemas are prepared directly; only the worker goes through the proxy.
    settings = replace(prepare_topics(isolated_settings(stack, "registry", registry_backoff_max_ms=500)),
                       registry_url=url)
    # The proxy runs on this event loop: wait for the worker in a thread so the loop keeps serving it.
    worker = await asyncio.to_thread(WorkerProcess(settings, ["processor"]).start)
    yield settings, proxy
    proxy.on = True
    await asyncio.to_thread(worker.stop)
    await proxy.stop()


def _newer_schema_id(stack, subject: str) -> tuple[int, dict]:
    """Register a compatible newer version of the command schema (one more optional field) straight at the
    registry; the processor has never seen its id."""
    schema = copy.deepcopy(load_schema("wallet_command"))
    schema["fields"].append({"name": f"note_{new_id('n').replace('-', '_')}", "type": "string", "default": ""})
    return SchemaRegistry(stack.registry_url).register(subject, schema), schema  # direct, not proxied


def _encode(schema_id: int, schema: dict, ledger: Ledger, command: c.CommandBase) -> bytes:
    record = ledger.commands.to_record(command)
    out = io.BytesIO()
    out.write(HEADER.pack(0, schema_id))
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def _direct(settings, stack):
    """The test's own clients talk to the registry directly (the proxy serves the worker only)."""
    return replace(settings, registry_url=stack.registry_url)


async def test_commands_wait_while_the_registry_is_down_and_apply_once_when_it_is_back(stack, proxied):
    settings, proxy = proxied
    async with Ledger(_direct(settings, stack)) as ledger:
        schema_id, schema = await asyncio.to_thread(_newer_schema_id, stack, f"{settings.commands_topic}-value")
        wallet_id = new_id()
        commands = [c.OpenWallet(command_id=new_id("open"), wallet_id=wallet_id, timestamp_ms=now_ms(),
                                 owner_id="o", currency="EUR"),
                    c.Deposit(command_id=new_id("dep"), wallet_id=wallet_id, timestamp_ms=now_ms(),
                              amount_minor=700, currency="EUR")]
        proxy.switch_off()
        for command in commands:
            await ledger.send_raw(wallet_id.encode(), _encode(schema_id, schema, ledger, command))

        async def waiting() -> bool:
            return await asyncio.to_thread(_worker_metric, settings, "wallet_registry_waiting") == 1
        await wait_for_async(waiting, WAIT_S, "the processor to wait for the registry", interval_s=0.2)
        await asyncio.sleep(DOWN_S)  # several backoff rounds while down
        assert [ev for ev in await ledger.read_all(settings.events_topic) if ev.wallet_id == wallet_id] == []
        assert await ledger.read_all(settings.dlq_topic, decode=False) == [], "a registry fault is not poison"
        assert await asyncio.to_thread(_worker_metric, settings, "wallet_registry_fetch_failures_total") >= 2

        proxy.on = True

        async def decided():
            events = [ev for ev in await ledger.read_all(settings.events_topic) if ev.wallet_id == wallet_id]
            return events if len(events) >= len(commands) else None
        events = await wait_for_async(decided, WAIT_S, "both commands decided once the registry is back")
        assert [type(ev) for ev in events] == [e.WalletOpened, e.Deposited]
        assert events[-1].balance_after_minor == 700
        assert await ledger.read_all(settings.dlq_topic, decode=False) == []
        assert await asyncio.to_thread(_worker_metric, settings, "wallet_registry_waiting") == 0


async def test_an_id_the_registry_does_not_know_is_still_unknown_schema_and_the_partition_moves_on(stack, proxied):
    settings, _ = proxied
    async with Ledger(_direct(settings, stack)) as ledger:
        wallet_id = new_id()
        await ledger.send_raw(wallet_id.encode(), HEADER.pack(0, 7_777_777) + b"\x02\x04")
        after = c.OpenWallet(command_id=new_id("open"), wallet_id=wallet_id, timestamp_ms=now_ms(), owner_id="o",
                             currency="EUR")
        await ledger.send(after)

        async def opened():
            return any(ev.command_id == after.command_id for ev in await ledger.read_all(settings.events_topic))
        await wait_for_async(opened, WAIT_S, "the command after the unknown id")
        dlq = await ledger.read_all(settings.dlq_topic, decode=False)
        assert [code for code, _ in dlq_reasons(dlq)] == ["UNKNOWN_SCHEMA"]
