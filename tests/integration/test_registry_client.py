"""The registry client against the real registry: a registered id is read once and cached; the registry's own
"not found" is `UNKNOWN_SCHEMA` at once; anything else (a 404 that is not its answer, nobody listening) is a
fault `ensure` waits out, counted and shown by the waiting gauge, which one waiter's end or another's empty
batch does not clear, and which a cancelled wait leaves as it found it."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest
from prometheus_client import REGISTRY

from app.codec import HEADER, MAGIC_BYTE, CodecError, CommandCodec, SchemaRegistry, load_schema
from app.domain import commands as c
from tests.harness import free_port, wait_for_async

FAULTS_SEEN_TIMEOUT_S = 30
# Fast retries, so a test sees several within moments.
FAST = dict(registry_request_timeout_s=1.0, registry_backoff_initial_ms=10, registry_backoff_max_ms=50)
UNKNOWN_ID_BASE = 1_900_000_000
FAILURES_MIN = 3


def _failures() -> float:
    """All registry fetch failures this process counted (every `error` label, or none)."""
    return sum(sample.value for metric in REGISTRY.collect() if metric.name == "wallet_registry_fetch_failures"
               for sample in metric.samples if sample.name == "wallet_registry_fetch_failures_total")


def _waiting() -> float:
    return REGISTRY.get_sample_value("wallet_registry_waiting") or 0.0


def _new_schema_id(stack) -> int:
    schema = load_schema("wallet_command")
    schema["doc"] = f"{schema.get('doc', '')} (registry client test {uuid.uuid4().hex})"
    return SchemaRegistry(stack.registry_url).register(f"registry-client-{uuid.uuid4().hex[:8]}-value", schema)


def _value(schema_id: int, body: bytes = b"") -> bytes:
    return HEADER.pack(MAGIC_BYTE, schema_id) + body


def _dead_registry(stack, where: str) -> SchemaRegistry:
    if where == "wrong path":  # the real server, a path with no API: its 404 is not "no such schema"
        url = stack.registry_url.rsplit("/apis/", 1)[0] + "/no-such-api"
    else:
        url = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"
    return SchemaRegistry.for_settings(replace(stack, registry_url=url, **FAST))


async def test_a_registered_id_is_read_once_and_then_decoded_from_the_cache(stack):
    schema_id = _new_schema_id(stack)
    registry = SchemaRegistry.for_settings(stack)
    codec = CommandCodec(registry, stack.commands_topic)
    command = c.Deposit(command_id="c1", wallet_id="w1", timestamp_ms=1, amount_minor=5, currency="EUR")
    value = _value(schema_id, codec.encode(command)[HEADER.size:])
    assert registry.missing([value]) == {schema_id}
    await codec.ensure([value])
    assert registry.missing([value]) == set()
    assert codec.decode(value) == command


async def test_an_id_the_registry_says_it_does_not_have_is_unknown_schema_at_once(stack):
    registry = SchemaRegistry.for_settings(replace(stack, **FAST))
    codec = CommandCodec(registry, stack.commands_topic)
    value = _value(UNKNOWN_ID_BASE + uuid.uuid4().int % 1_000_000, b"\x02c1")
    failures_before = _failures()
    await codec.ensure([value])
    with pytest.raises(CodecError) as raised:
        codec.decode(value)
    assert raised.value.code == "UNKNOWN_SCHEMA"
    assert _failures() == failures_before
    assert registry.missing([value]) == set(), "asked again at once"


@pytest.mark.parametrize("where", ["wrong path", "nobody listening"])
async def test_a_registry_that_gives_no_definite_answer_is_waited_for_until_cancelled(stack, where):
    registry = _dead_registry(stack, where)
    value = _value(_new_schema_id(stack))
    failures_before, waiting_before = _failures(), _waiting()
    waiting = asyncio.create_task(registry.ensure([value]))

    async def retried_and_waiting():
        return _failures() >= failures_before + FAILURES_MIN and _waiting() == 1

    await wait_for_async(retried_and_waiting, FAULTS_SEEN_TIMEOUT_S, f"retries against {where}")
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert _waiting() == waiting_before == 0
    assert registry.missing([value]) != set(), "a fault must not settle the id either way"


async def test_one_waiter_keeps_the_gauge_up_whatever_other_readers_of_the_process_do(stack):
    """The processor waits; the sinks' batches (nothing new in them) and a reader whose id resolves come and
    go on the same loop: the gauge stays 1 until the processor's wait ends."""
    dead = _dead_registry(stack, "nobody listening")
    live = SchemaRegistry.for_settings(replace(stack, **FAST))
    failures_before = _failures()
    waiting = asyncio.create_task(dead.ensure([_value(_new_schema_id(stack))]))
    try:
        async def retried():
            return _failures() >= failures_before + FAILURES_MIN
        await wait_for_async(retried, FAULTS_SEEN_TIMEOUT_S, "retries against a dead registry")
        await live.ensure([])  # a batch with nothing new
        await live.ensure([_value(_new_schema_id(stack))])  # a batch with a new id the registry answers
        assert _waiting() == 1
        assert not waiting.done()
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    assert _waiting() == 0
