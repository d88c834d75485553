"""`wallet dlq list|replay` on the real stack: a message dead-lettered as UNKNOWN_SCHEMA (its schema was
missing from the registry, since restored) is re-driven to the partition its wallet lives on exactly once; a
dry run publishes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from wallet.dlq import REPLAYED_HEADER, replayed_topic
from app.domain import commands as c
from app.domain import events as e
from app.kafka import partition_for
from app.settings import REPO_ROOT
from tests.conftest import prepare_topics
from tests.harness import (Ledger, WorkerProcess, dlq_reasons, isolated_settings, new_id, now_ms, read_topic,
                           wait_for_async)

WAIT_S = 60
CLI_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def settings(stack):
    settings = prepare_topics(isolated_settings(stack, "dlqcli"))
    worker = WorkerProcess(settings, ["processor"]).start()
    yield settings
    assert worker.stop() == 0


def wallet(settings_, *args: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "wallet.cli", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, **settings_.to_env()}, timeout=CLI_TIMEOUT_S)
    return proc.returncode, proc.stdout + proc.stderr


async def _outcomes_of(ledger: Ledger, command_id: str) -> list[e.EventBase]:
    return [ev for ev in await ledger.read_all(ledger.settings.events_topic) if ev.command_id == command_id]


def _topics(settings) -> set[str]:
    from confluent_kafka.admin import AdminClient

    return set(AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(timeout=15).topics)


async def _topic_size(settings, topic: str) -> int:
    return len(await read_topic(settings, topic))


def _dead_letter_headers(settings, partition: int) -> list[tuple[str, bytes]]:
    """The headers the processor writes on a poison message (agents/processor.py `_dlq`)."""
    return [("error.code", b"UNKNOWN_SCHEMA"), ("error.detail", b"schema id 42 is not in the registry"),
            ("source.topic", settings.commands_topic.encode()), ("source.partition", str(partition).encode()),
            ("source.offset", b"7")]


async def test_dlq_replay_re_drives_a_dead_lettered_message_exactly_once_and_dry_run_publishes_nothing(settings):
    wallet_id = new_id("w")
    home = partition_for(wallet_id.encode(), settings.partitions)
    deposit = c.Deposit(command_id=new_id("dep"), wallet_id=wallet_id, timestamp_ms=now_ms(), amount_minor=4_200,
                        currency="EUR")
    async with Ledger(settings) as ledger:
        opened = c.OpenWallet(command_id=new_id("open"), wallet_id=wallet_id, timestamp_ms=now_ms(), owner_id="o",
                              currency="EUR")
        await ledger.send(opened)
        # Dead-lettered on another partition than its wallet's, as a message of a misrouting producer was.
        await (await ledger._producer.send(settings.dlq_topic, key=wallet_id.encode(),
                                           value=ledger.commands.encode(deposit),
                                           headers=_dead_letter_headers(settings, (home + 1) % settings.partitions)))

        async def dead_lettered():
            return await read_topic(settings, settings.dlq_topic)

        dlq = await wait_for_async(dead_lettered, WAIT_S, "the misrouted deposit in the DLQ", interval_s=0.3)
        assert [code for code, _ in dlq_reasons(dlq)] == ["UNKNOWN_SCHEMA"]
        position = f"{dlq[0].partition}:{dlq[0].offset}"
        await wait_for_async(lambda: _outcomes_of(ledger, opened.command_id), WAIT_S, "the wallet to open")
        assert await _outcomes_of(ledger, deposit.command_id) == []

        code, out = wallet(settings, "dlq", "list")
        assert code == 0, out
        assert "UNKNOWN_SCHEMA" in out and f"{settings.commands_topic}[{(home + 1) % settings.partitions}]" in out
        assert "not replayed" in out

        commands_before = await _topic_size(settings, settings.commands_topic)
        code, out = wallet(settings, "dlq", "replay", "--dry-run")
        assert code == 0, out
        assert f"{position}: would replay UNKNOWN_SCHEMA" in out
        assert await _topic_size(settings, settings.commands_topic) == commands_before
        assert replayed_topic(settings) not in _topics(settings), "a dry run wrote replay markers"

        code, out = wallet(settings, "dlq", "replay", "--offset", position)
        assert code == 0, out
        assert f"{position}: replayed UNKNOWN_SCHEMA message to {settings.commands_topic}[{home}]" in out
        applied = await wait_for_async(lambda: _outcomes_of(ledger, deposit.command_id), WAIT_S,
                                       "the replayed deposit's outcome")
        assert [type(ev) for ev in applied] == [e.Deposited]

        # Again, by position and as "all": nothing is re-published.
        for args in (["--offset", position], []):
            code, out = wallet(settings, "dlq", "replay", *args)
            assert code == 0, out
            assert f"{position}: skipped, already replayed" in out and "0 message(s) replayed" in out
        code, out = wallet(settings, "dlq", "replay", "--offset", "0:999999")
        assert code == 1 and "no such record" in out

        commands = await read_topic(settings, settings.commands_topic)
        replayed = [r for r in commands if REPLAYED_HEADER in dict(r.headers or ())]
        assert len(replayed) == 1 and replayed[0].partition == home
        assert len(commands) == commands_before + 1

        # A later command's outcome proves the processor has read past anything a repeat could have sent.
        sentinel = c.Deposit(command_id=new_id("dep"), wallet_id=wallet_id, timestamp_ms=now_ms(), amount_minor=1,
                             currency="EUR")
        await ledger.send(sentinel)
        await wait_for_async(lambda: _outcomes_of(ledger, sentinel.command_id), WAIT_S, "the sentinel's outcome")
        outcomes = await _outcomes_of(ledger, deposit.command_id)
        assert len(outcomes) == 1 and outcomes[0].balance_after_minor == 4_200

    code, out = wallet(settings, "dlq", "list", "--limit", "5")
    assert code == 0, out
    assert "replayed " in out and "1 replayed" in out
