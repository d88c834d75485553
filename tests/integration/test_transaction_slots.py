"""A partition's transaction slots (agents/transactions.py) on the real stack: fencing and exactly-once.

The owner of a partition starts its transactions on `processor_transaction_slots` transactional ids in turn.
Whatever that setting is, it must fence every id a previous owner may have used, or a zombie of a version
with more slots could still commit into the partition.
"""

from __future__ import annotations

from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from app.domain import commands as c
from app.kafka import producer_options
from app.settings import PROCESSOR_TRANSACTION_SLOTS_MAX
from agents.transactions import transactional_id
from tests.conftest import prepare_topics
from tests.harness import Ledger, WorkerProcess, isolated_settings, new_id, now_ms, wait_for_async

WAIT_S = 90


@pytest.fixture
def settings(stack):
    return prepare_topics(isolated_settings(stack, "slots", processor_transaction_slots=1))


async def test_an_owner_with_one_slot_fences_a_zombie_holding_the_last_slot(settings):
    # A worker of a version that used every slot, paused with a transaction open on the last one.
    zombie = AIOKafkaProducer(**producer_options(
        settings, transactional_id=transactional_id(settings.app_id, 0, PROCESSOR_TRANSACTION_SLOTS_MAX - 1)))
    await zombie.start()
    try:
        await zombie.begin_transaction()
        await zombie.send_and_wait(settings.events_topic, b"late write", key=b"zombie", partition=0)
        worker = WorkerProcess(settings, ["processor"]).start()  # owns every partition, with one slot
        try:
            with pytest.raises(KafkaError):  # fenced (ProducerFenced or an invalid epoch): the write never lands
                await zombie.commit_transaction()
        finally:
            worker.stop()
    finally:
        await zombie.stop()
    async with Ledger(settings) as ledger:
        values = [record.value for record in await ledger.read_all(settings.events_topic, decode=False)]
    assert b"late write" not in values


async def test_alternating_slots_keep_each_wallet_in_order_and_apply_each_command_once(stack):
    settings = prepare_topics(isolated_settings(stack, "slots2", processor_transaction_slots=2))
    wallets = [new_id("sl") for _ in range(8)]
    worker = WorkerProcess(settings, ["processor"]).start()
    sent: list[c.CommandBase] = [c.OpenWallet(command_id=f"open-{w}", wallet_id=w, timestamp_ms=now_ms(),
                                              owner_id="o", currency="EUR") for w in wallets]
    try:
        async with Ledger(settings) as ledger:
            await ledger.send(*sent)
            for round_ in range(30):  # small batches: many transactions per partition, one after another
                deposits = [c.Deposit(command_id=f"dep-{round_}-{w}", wallet_id=w, timestamp_ms=now_ms(),
                                      amount_minor=round_ + 1, currency="EUR") for w in wallets]
                sent += deposits
                await ledger.send(*deposits)
            ids = {command.command_id for command in sent}

            async def decided():
                events = await ledger.read_all(settings.events_topic)
                return events if ids <= {event.command_id for event in events} else None
            events = await wait_for_async(decided, WAIT_S, "every command's outcome", interval_s=0.5)
    finally:
        worker.stop()
    assert max(Counter(event.command_id for event in events).values()) == 1
    for wallet in wallets:
        versions = [event.version for event in events if event.wallet_id == wallet]
        assert versions == list(range(1, 32))
        assert [event for event in events if event.wallet_id == wallet][-1].balance_after_minor == sum(range(1, 31))
