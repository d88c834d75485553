"""Processor workers as one consumer group on the real stack: scale out, scale in, a paused zombie, owner reads.

Commands flow the whole time; afterwards every command has exactly one outcome and every wallet's balance
is the sum of what was applied to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.domain import commands as c
from app.domain import events as e
from tests.conftest import prepare_topics
from tests.harness import Ledger, WorkerProcess, http_json, isolated_settings, new_id, now_ms, wait_for, \
    wait_for_async

WAIT_S = 90
WALLETS = 24


def metric(settings, instance: int, name: str) -> float:
    url = f"http://127.0.0.1:{settings.worker_web_port + instance}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def owned(settings, instance: int) -> int:
    try:
        return int(metric(settings, instance, "wallet_processor_partitions_owned"))
    except OSError:
        return -1


@pytest.fixture
def settings(stack):
    return prepare_topics(isolated_settings(stack, "elastic", processor_standby_replicas=1))


def _opens(wallets: list[str]) -> list[c.CommandBase]:
    return [c.OpenWallet(command_id=f"open-{w}", wallet_id=w, timestamp_ms=now_ms(), owner_id="o", currency="EUR")
            for w in wallets]


def _deposits(wallets: list[str], round_: int) -> list[c.CommandBase]:
    return [c.Deposit(command_id=f"dep-{round_}-{w}", wallet_id=w, timestamp_ms=now_ms(), amount_minor=100,
                      currency="EUR") for w in wallets]


async def _all_decided(ledger: Ledger, ids: set[str]) -> list[e.EventBase]:
    async def decided():
        events = await ledger.read_all(ledger.settings.events_topic)
        return events if ids <= {ev.command_id for ev in events} else None
    return await wait_for_async(decided, WAIT_S, f"outcomes of {len(ids)} commands", interval_s=0.5)


def _assert_exactly_once(events: list[e.EventBase], sent: list[c.CommandBase], wallets: list[str], rounds: int):
    counts = Counter(ev.command_id for ev in events)
    assert {cmd.command_id for cmd in sent} <= set(counts)
    assert max(counts.values()) == 1, [cid for cid, n in counts.items() if n > 1][:5]
    last = {ev.wallet_id: ev for ev in events}
    assert {last[w].balance_after_minor for w in wallets} == {100 * rounds}


async def test_workers_scale_out_and_in_and_every_command_applies_once(settings):
    wallets = [new_id("el") for _ in range(WALLETS)]
    first = WorkerProcess(settings, ["processor"], instance=0).start()
    second = WorkerProcess(settings, ["processor"], instance=1)
    web = WorkerProcess(settings, ["web"], instance=2)
    sent: list[c.CommandBase] = []
    async with Ledger(settings) as ledger:
        sent += _opens(wallets) + _deposits(wallets, 0)
        await ledger.send(*sent)
        await _all_decided(ledger, {cmd.command_id for cmd in sent})
        assert owned(settings, 0) == settings.partitions

        second.start()  # scale out: the newcomer takes a share of the partitions
        wait_for(lambda: owned(settings, 1) > 0 and owned(settings, 0) + owned(settings, 1) == settings.partitions,
                 WAIT_S, "the second worker to own partitions")
        round_1 = _deposits(wallets, 1)
        sent += round_1
        await ledger.send(*round_1)
        await _all_decided(ledger, {cmd.command_id for cmd in sent})

        # Strong reads find each wallet's owner from the live group, whichever worker it is.
        web.start()
        for wallet_id in wallets[:8]:
            status, _, body = http_json(
                "GET", f"http://127.0.0.1:{settings.http_port}/v1/wallets/{wallet_id}/balance?consistency=strong",
                key="test-read")
            assert (status, body.get("balance")) == (200, "2.00"), body
        # The standby of the first worker's partitions is the second worker, and it keeps up.
        wait_for(lambda: metric(settings, 1, "wallet_processor_standby_partitions") > 0, WAIT_S,
                 "the second worker to stand by for the first one's partitions")

        assert first.stop() == 0  # scale in: its partitions move to the remaining worker
        wait_for(lambda: owned(settings, 1) == settings.partitions, WAIT_S, "the last worker to own everything")
        round_2 = _deposits(wallets, 2)
        sent += round_2
        await ledger.send(*round_2)
        events = await _all_decided(ledger, {cmd.command_id for cmd in sent})
        status, _, body = http_json(
            "GET", f"http://127.0.0.1:{settings.http_port}/v1/wallets/{wallets[0]}/balance?consistency=strong",
            key="test-read")
        assert (status, body.get("balance")) == (200, "3.00"), body
    web.stop()
    assert second.stop() == 0
    _assert_exactly_once(events, sent, wallets, rounds=3)


async def test_a_paused_worker_is_fenced_and_nothing_applies_twice(settings):
    wallets = [new_id("zo") for _ in range(WALLETS)]
    live = WorkerProcess(settings, ["processor"], instance=0).start()
    zombie = WorkerProcess(settings, ["processor"], instance=1).start()
    wait_for(lambda: owned(settings, 0) > 0 and owned(settings, 1) > 0, WAIT_S, "both workers to own partitions")
    sent: list[c.CommandBase] = []
    async with Ledger(settings) as ledger:
        sent += _opens(wallets)
        await ledger.send(*sent)
        await _all_decided(ledger, {cmd.command_id for cmd in sent})

        rounds = 4

        async def keep_sending():
            for round_ in range(rounds):
                batch = _deposits(wallets, round_)
                sent.extend(batch)
                await ledger.send(*batch)
                await asyncio.sleep(settings.processor_session_timeout_ms / 1000 / 2)

        sender = asyncio.create_task(keep_sending())
        os.kill(zombie.proc.pid, signal.SIGSTOP)  # paused past its session: the group gives its partitions away
        try:
            await asyncio.to_thread(wait_for, lambda: owned(settings, 0) == settings.partitions, WAIT_S,
                                    "the live worker to take the paused one's partitions")
        finally:
            os.kill(zombie.proc.pid, signal.SIGCONT)  # the zombie wakes up and tries to go on
        await sender
        events = await _all_decided(ledger, {cmd.command_id for cmd in sent})
    live.stop()
    zombie.stop()
    _assert_exactly_once(events, sent, wallets, rounds=4)


async def test_replicas_sharing_a_state_folder_claim_distinct_slots_and_a_replacement_takes_a_warm_one(stack):
    # docker compose --scale: replicas share one state volume and get a new hostname when recreated.
    settings = prepare_topics(isolated_settings(stack, "slots", processor_standby_replicas=1))
    env = {"WALLET_PROCESSOR_CLAIM_MEMBER_SLOT": "1"}
    wallets = [new_id("sl") for _ in range(WALLETS)]
    workers = [WorkerProcess(settings, ["processor"], instance=i, extra_env=env).start() for i in range(2)]
    try:
        names = [_claimed(worker) for worker in workers]
        assert sorted(names) == ["slot-0", "slot-1"]
        async with Ledger(settings) as ledger:
            sent = _opens(wallets) + _deposits(wallets, 1)
            await ledger.send(*sent)
            await _all_decided(ledger, {cmd.command_id for cmd in sent})
            gone = names.index("slot-0")
            stores = sorted(p.name for p in (settings.state_dir / "processor" / "slot-0").iterdir())
            assert stores, "slot-0 kept no store"
            workers[gone].kill()
            replacement = WorkerProcess(settings, ["processor"], instance=2, extra_env=env).start()
            workers.append(replacement)
            assert _claimed(replacement) == "slot-0"
            more = _deposits(wallets, 2)
            await ledger.send(*more)
            events = await _all_decided(ledger, {cmd.command_id for cmd in sent + more})
            _assert_exactly_once(events, sent + more, wallets, rounds=2)
        assert sorted(p.name for p in (settings.state_dir / "processor").iterdir() if p.is_dir()) == \
            ["slot-0", "slot-1"]
    finally:
        for worker in workers:
            worker.stop()


def _claimed(worker: WorkerProcess) -> str:
    line = next(line for line in worker.log_lines() if '"member slot claimed"' in line)
    return json.loads(line)["member"]
