"""The processor's input positions are a record of its own transactions (agents/input_positions.py): a new
owner resumes from the last committed one, whatever the group's offsets say; the group's offsets follow
the transactions, for lag tools."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as PositionKey  # what the positions record maps (confluent's differs)
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from agents.input_positions import READ_BACK_WINDOW_FIRST, encode_positions, position_key, read_positions
from app.domain import commands as c
from app.kafka import consumer_options, partition_for, producer_options
from tests.conftest import prepare_topics
from tests.harness import Ledger, WorkerProcess, isolated_settings, new_id, now_ms, read_topic, wait_for_async

WAIT_S = 90
POISON_PER_PARTITION = 3


def _wallet_per_partition(partitions: int) -> list[str]:
    """One new wallet id on each partition."""
    found: dict[int, str] = {}
    while len(found) < partitions:
        wallet_id = new_id("ip")
        found.setdefault(partition_for(wallet_id.encode(), partitions), wallet_id)
    return [found[p] for p in range(partitions)]


def _opens(wallets: list[str]) -> list[c.CommandBase]:
    return [c.OpenWallet(command_id=f"open-{w}", wallet_id=w, timestamp_ms=now_ms(), owner_id="o", currency="EUR")
            for w in wallets]


async def _send_poison(ledger: Ledger, wallets: list[str]) -> int:
    """POISON_PER_PARTITION undecodable commands keyed by each wallet; how many were sent."""
    for wallet_id in wallets:
        for _ in range(POISON_PER_PARTITION):
            await ledger.send_raw(wallet_id.encode(), b"not an avro command")
    return POISON_PER_PARTITION * len(wallets)


async def _probe(ledger: Ledger, wallets: list[str]) -> tuple[list[c.CommandBase], list]:
    """One more deposit on each wallet (each partition), and every event once all of them were decided:
    commands of one partition are decided in order, so each answer means everything before it on its
    partition was read again or, rightly, not."""
    probes = [c.Deposit(command_id=f"probe-{w}", wallet_id=w, timestamp_ms=now_ms(), amount_minor=100,
                        currency="EUR") for w in wallets]
    await ledger.send(*probes)

    async def probes_decided():
        events = await ledger.read_all(ledger.settings.events_topic)
        return events if {p.command_id for p in probes} <= {ev.command_id for ev in events} else None

    return probes, await wait_for_async(probes_decided, WAIT_S, "the probes' outcomes")


def _set_group_offsets(settings, admin: AdminClient, offsets: list[TopicPartition]) -> None:
    group = f"{settings.app_id}-processor"
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, offsets)])[group].result()


def _group_offsets(settings, admin: AdminClient) -> dict[int, int]:
    group = f"{settings.app_id}-processor"
    listed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result()
    return {tp.partition: tp.offset for tp in listed.topic_partitions if tp.topic == settings.commands_topic}


@pytest.fixture
def namespace(stack) -> tuple:
    """Settings of a namespace of its own, an admin client, and one new wallet id per partition."""
    settings = prepare_topics(isolated_settings(stack, "positions"))
    return settings, AdminClient({"bootstrap.servers": settings.kafka_bootstrap}), \
        _wallet_per_partition(settings.partitions)


async def test_a_new_owner_resumes_from_the_positions_record_though_the_groups_offsets_went_back(namespace):
    settings, admin, wallets = namespace
    first = WorkerProcess(settings, ["processor"], instance=0).start()
    async with Ledger(settings) as ledger:
        opens = _opens(wallets)
        await ledger.send(*opens)
        poison = await _send_poison(ledger, wallets)

        async def dead_letters(expected: int):
            letters = await read_topic(settings, settings.dlq_topic)
            return letters if len(letters) >= expected else None

        await wait_for_async(lambda: dead_letters(poison), WAIT_S, "the poison in the DLQ")
        ends = {p: 1 + POISON_PER_PARTITION for p in range(settings.partitions)}  # an open and the poison each

        # The group's offsets follow the transactions (committed after each one, for lag tools).
        async def group_caught_up():
            offsets = _group_offsets(settings, admin)
            return offsets if all(offsets.get(p, -1) >= end for p, end in ends.items()) else None

        await wait_for_async(group_caught_up, WAIT_S, "the group's offsets to reach the end of the commands")
        assert first.stop() == 0

        # Someone rewinds the group's offsets to the start (an operator's reset, a tool's mistake).
        _set_group_offsets(settings, admin, [TopicPartition(topic, p, 0) for p in range(settings.partitions)
                                             for topic in (settings.commands_topic, settings.transfer_legs_topic)])
        assert set(_group_offsets(settings, admin).values()) == {0}

        # A worker with an empty state folder takes every partition over and decides one more command on each.
        second = WorkerProcess(settings, ["processor"], instance=1).start()
        probes, events = await _probe(ledger, wallets)
        letters = await read_topic(settings, settings.dlq_topic)
    assert second.stop() == 0
    assert len(letters) == poison, f"{len(letters) - poison} poison message(s) dead-lettered again"
    assert sorted(ev.command_id for ev in events) == sorted(cmd.command_id for cmd in opens + probes)


async def test_group_offsets_later_than_the_positions_record_win_as_an_earlier_release_left_them(namespace):
    """A worker of the release before the positions record committed through the group only: where the group's
    offsets are later than the record, the new owner goes on from them and does not decide those commands
    again."""
    settings, admin, wallets = namespace
    first = WorkerProcess(settings, ["processor"], instance=0).start()
    async with Ledger(settings) as ledger:
        opens = _opens(wallets)
        await ledger.send(*opens)

        async def opened():
            events = await ledger.read_all(settings.events_topic)
            return events if len(events) >= len(opens) else None

        await wait_for_async(opened, WAIT_S, "the wallets opened")
        assert first.stop() == 0
        # Poison that the earlier release's worker "decided" (its offsets committed through the group only).
        await _send_poison(ledger, wallets)
        _set_group_offsets(settings, admin, [TopicPartition(settings.commands_topic, p, 1 + POISON_PER_PARTITION)
                                             for p in range(settings.partitions)])

        second = WorkerProcess(settings, ["processor"], instance=1).start()
        await _probe(ledger, wallets)
        letters = await read_topic(settings, settings.dlq_topic)
    assert second.stop() == 0
    assert letters == [], f"{len(letters)} command(s) before the group's offsets were decided again"


async def test_the_read_back_skips_a_long_run_of_aborted_positions_records(namespace):
    """Only committed records count, however many aborted ones follow the last of them (a zombie's, or a
    crashed owner's): the read-back widens its window until it finds one, and finds none in an empty partition."""
    settings, _, _ = namespace
    topic = settings.processor_offsets_topic
    committed = {PositionKey(settings.commands_topic, 0): 7, PositionKey(settings.transfer_legs_topic, 0): 3}
    producer = AIOKafkaProducer(**producer_options(settings, transactional_id=f"{settings.app_id}-read-back"))
    await producer.start()
    try:
        for aborted in range(-1, READ_BACK_WINDOW_FIRST):  # each transaction takes two offsets: past the window
            positions = committed if aborted < 0 else {PositionKey(settings.commands_topic, 0): 1000 + aborted}
            await producer.begin_transaction()
            await producer.send_and_wait(topic, encode_positions(positions), key=position_key(0), partition=0)
            await (producer.commit_transaction() if aborted < 0 else producer.abort_transaction())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**consumer_options(settings, None))
    await consumer.start()
    try:
        found = await read_positions(consumer, topic, {0, 1})
    finally:
        await consumer.stop()
    assert found == committed
