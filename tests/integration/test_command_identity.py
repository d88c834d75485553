"""Command identity on the real stack: reserved ids, retention on the processor's clock, hold-id reuse, routing.

Each test is a reproduction of a way ordinary client input used to strand, double or hide money
(docs/DESIGN.md "Command identity").
"""

from __future__ import annotations

import shutil
import urllib.request
from collections import Counter

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from app import identity
from app.domain import commands as c
from app.domain import events as e
from app.kafka import partition_for
from tests.conftest import prepare_topics
from tests.harness import Ledger, WorkerProcess, dlq_reasons, isolated_settings, new_id, now_ms, wait_for, \
    wait_for_async

WAIT_S = 60
DAY_MS = 24 * 3600 * 1000


@pytest.fixture(scope="module")
def worker(stack):
    settings = prepare_topics(isolated_settings(stack, "identity", retention_sweep_interval_s=1))
    worker = WorkerProcess(settings, ["processor"]).start()
    yield worker
    worker.stop()


@pytest.fixture
def settings(worker):
    return worker.settings


@pytest.fixture
async def ledger(settings):
    async with Ledger(settings) as ledger:
        yield ledger


async def events_of(ledger: Ledger, wallet_id: str) -> list[e.EventBase]:
    return [ev for ev in await ledger.read_all(ledger.settings.events_topic) if ev.wallet_id == wallet_id]


async def wait_event(ledger: Ledger, wallet_id: str, command_id: str) -> e.EventBase:
    async def found():
        return next((ev for ev in await events_of(ledger, wallet_id) if ev.command_id == command_id), None)
    return await wait_for_async(found, WAIT_S, f"the outcome of {command_id}", interval_s=0.3)


def opened(wallet_id: str) -> c.OpenWallet:
    return c.OpenWallet(command_id=new_id("open"), wallet_id=wallet_id, timestamp_ms=now_ms(), owner_id="o",
                        currency="EUR")


def deposit(wallet_id: str, amount_minor: int, command_id: str | None = None, timestamp_ms: int | None = None):
    return c.Deposit(command_id=command_id or new_id("dep"), wallet_id=wallet_id,
                     timestamp_ms=now_ms() if timestamp_ms is None else timestamp_ms, amount_minor=amount_minor,
                     currency="EUR")


def worker_metric(worker: WorkerProcess, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.settings.worker_web_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name)


async def test_a_public_id_shaped_like_a_transfer_leg_cannot_capture_the_leg(ledger):
    source, destination = new_id(), new_id()
    transfer = c.Transfer(command_id=new_id("t"), wallet_id=source, timestamp_ms=now_ms(),
                          destination_wallet_id=destination, amount_minor=2_000, currency="EUR")
    # Every id form the relay ever used or uses, sent first by a client on the destination.
    lookalikes = [f"{transfer.command_id}:credit", f"{destination}:{transfer.command_id}:credit"]
    await ledger.send(opened(source), opened(destination), deposit(source, 10_000),
                      *(deposit(destination, 1, command_id=lookalike) for lookalike in lookalikes))
    reserved = deposit(destination, 1, command_id=identity.credit_command_id(source, transfer.command_id, now_ms()))
    await ledger.send(reserved, transfer)

    debited = await wait_event(ledger, source, transfer.command_id)
    credited = await wait_event(ledger, destination,
                                identity.credit_command_id(source, transfer.command_id, debited.timestamp_ms))
    assert isinstance(credited, e.TransferCredited) and credited.amount_minor == 2_000
    assert credited.balance_after_minor == 2_000 + len(lookalikes)
    dlq = await ledger.read_all(ledger.settings.dlq_topic, decode=False)
    refused = [r for r in dlq if r.value == ledger.commands.encode(reserved)]
    assert [code for code, _ in dlq_reasons(refused)] == [identity.RESERVED_COMMAND_ID]


async def test_a_replayed_command_with_an_old_timestamp_stays_a_duplicate_across_sweeps_and_restores(worker, ledger):
    wallet_id = new_id()
    old = deposit(wallet_id, 1_000, timestamp_ms=now_ms() - 8 * DAY_MS)  # an outbox replayed after an outage
    await ledger.send(opened(wallet_id), old)
    first = await wait_event(ledger, wallet_id, old.command_id)
    assert isinstance(first, e.Deposited)
    assert abs(first.timestamp_ms - now_ms()) < 5 * 60_000, "decided on the processor's clock"

    sweeps = worker_metric(worker, "wallet_retention_sweeps_total")
    wait_for(lambda: worker_metric(worker, "wallet_retention_sweeps_total") >= sweeps + 2, WAIT_S,
             "two retention sweeps after the first outcome")
    marker = deposit(wallet_id, 1)
    await ledger.send(old, marker)
    await wait_event(ledger, wallet_id, marker.command_id)

    # A restore from the log rebuilds the same memory: wipe the store and send it once more.
    worker.stop()
    shutil.rmtree(worker.settings.state_dir / "processor")
    worker.start()
    marker_after_restore = deposit(wallet_id, 1)
    await ledger.send(old, marker_after_restore)
    await wait_event(ledger, wallet_id, marker_after_restore.command_id)

    applied = Counter(ev.command_id for ev in await events_of(ledger, wallet_id) if isinstance(ev, e.Deposited))
    assert applied[old.command_id] == 1
    last = [ev for ev in await events_of(ledger, wallet_id)][-1]
    assert last.balance_after_minor == 1_002


async def test_a_hold_id_placed_again_expires_again(ledger):
    wallet_id = new_id()
    await ledger.send(opened(wallet_id), deposit(wallet_id, 10_000))
    for placement in range(2):
        place = c.PlaceHold(command_id=new_id(f"place{placement}"), wallet_id=wallet_id, timestamp_ms=now_ms(),
                            hold_id="reused", amount_minor=1_000, currency="EUR", expires_at_ms=now_ms() + 1_000)
        await ledger.send(place)
        released = await wait_event(ledger, wallet_id,
                                    identity.expiry_command_id(wallet_id, place.hold_id, place.expires_at_ms))
        assert isinstance(released, e.HoldReleased) and released.reason == "EXPIRED"
        assert released.held_after_minor == 0


def _partitioner_producer(settings, partitioner: str | None) -> Producer:
    config = {"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True}
    if partitioner is not None:
        config["partitioner"] = partitioner
    return Producer(config)


@pytest.mark.parametrize("partitioner", [None, "consistent", "fnv1a"], ids=["librdkafka-default", "crc32", "fnv1a"])
async def test_commands_from_any_key_partitioner_reach_their_wallets_in_order(ledger, settings, partitioner):
    # Any partitioner that keeps a key on one partition keeps a wallet's commands in order.
    wallet_ids = [new_id() for _ in range(20)]
    producer = _partitioner_producer(settings, partitioner)
    for wallet_id in wallet_ids:
        for command in (opened(wallet_id), deposit(wallet_id, 500), deposit(wallet_id, 250)):
            producer.produce(settings.commands_topic, key=wallet_id.encode(), value=ledger.commands.encode(command))
    assert producer.flush(30) == 0

    async def all_settled():
        events = await ledger.read_all(settings.events_topic)
        last = {ev.wallet_id: ev for ev in events if ev.wallet_id in wallet_ids}
        return last if len(last) == len(wallet_ids) and all(ev.version == 3 for ev in last.values()) else None
    last = await wait_for_async(all_settled, WAIT_S, "every wallet opened and funded in order", interval_s=0.5)
    assert {ev.balance_after_minor for ev in last.values()} == {750}
    records = await ledger.read_all(settings.events_topic, decode=False)
    for record in records:
        event = ledger.events.decode(record.value)
        if event.wallet_id in wallet_ids:
            assert record.partition == partition_for(event.wallet_id.encode(), settings.partitions)
            assert record.key == event.wallet_id.encode()


@pytest.mark.parametrize("compression", ["gzip", "lz4", "snappy", "zstd"])
async def test_commands_compressed_with_any_kafka_codec_are_decided(ledger, settings, compression):
    wallet_ids = [new_id() for _ in range(4)]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "compression.type": compression,
                         "partitioner": "murmur2_random"})
    for wallet_id in wallet_ids:
        for command in (opened(wallet_id), deposit(wallet_id, 300)):
            producer.produce(settings.commands_topic, key=wallet_id.encode(), value=ledger.commands.encode(command))
    assert producer.flush(30) == 0

    async def all_funded():
        events = await ledger.read_all(settings.events_topic)
        return {ev.wallet_id for ev in events if isinstance(ev, e.Deposited)} >= set(wallet_ids)
    await wait_for_async(all_funded, WAIT_S, f"every {compression}-compressed command decided", interval_s=0.5)


async def test_commands_without_a_key_are_routed_by_their_wallet_id(ledger, settings):
    wallet_ids = [new_id() for _ in range(8)]
    for index, wallet_id in enumerate(wallet_ids):
        for command in (opened(wallet_id), deposit(wallet_id, 100)):
            await ledger.send_raw(None, ledger.commands.encode(command), partition=index % settings.partitions)

    async def all_funded():
        events = await ledger.read_all(settings.events_topic)
        funded = {ev.wallet_id for ev in events if isinstance(ev, e.Deposited) and ev.wallet_id in wallet_ids}
        return funded == set(wallet_ids)
    await wait_for_async(all_funded, WAIT_S, "every null-keyed wallet opened and funded", interval_s=0.5)


async def test_a_key_that_disagrees_with_the_body_stays_poison(ledger, settings):
    wallet_id = new_id()
    command = opened(wallet_id)
    value = ledger.commands.encode(command)
    await ledger.send_raw(b"someone-else", value)

    async def refused():
        dlq = await ledger.read_all(settings.dlq_topic, decode=False)
        return [code for code, _ in dlq_reasons([r for r in dlq if r.value == value])]
    assert await wait_for_async(refused, WAIT_S, "the mismatched key in the DLQ", interval_s=0.5) == ["KEY_MISMATCH"]

