"""The processor on the real stack: transfers across partitions, refunds, holds, idempotency, poison."""

from __future__ import annotations

from collections import defaultdict

import pytest

from app import identity
from app.codec import HEADER
from app.domain import commands as c
from app.domain import events as e
from app.kafka import partition_for
from tests.conftest import prepare_topics
from tests.harness import (Ledger, WorkerProcess, dlq_reasons, isolated_settings, new_id, now_ms, read_topic,
                           wait_for_async)

WAIT_S = 60


@pytest.fixture(scope="module")
def settings(stack):
    settings = prepare_topics(isolated_settings(stack, "flows"))
    worker = WorkerProcess(settings, ["processor"]).start()
    yield settings
    assert worker.stop() == 0


@pytest.fixture
async def ledger(settings):
    async with Ledger(settings) as ledger:
        yield ledger


def wallet_on_partition(partition: int, partitions: int, prefix: str = "w") -> str:
    while True:
        wallet_id = new_id(prefix)
        if partition_for(wallet_id.encode(), partitions) == partition:
            return wallet_id


async def outcomes(ledger: Ledger, *wallet_ids: str) -> dict[str, list[e.EventBase]]:
    by_wallet: dict[str, list[e.EventBase]] = defaultdict(list)
    for event in await ledger.read_all(ledger.settings.events_topic):
        if event.wallet_id in wallet_ids:
            by_wallet[event.wallet_id].append(event)
    return by_wallet


async def wait_outcome(ledger: Ledger, wallet_id: str, command_id: str) -> e.EventBase:
    async def found():
        return next((ev for ev in (await outcomes(ledger, wallet_id))[wallet_id] if ev.command_id == command_id), None)

    return await wait_for_async(found, WAIT_S, f"the outcome of {command_id}", interval_s=0.3)


def open_cmd(wallet_id: str, currency: str = "EUR") -> c.OpenWallet:
    return c.OpenWallet(command_id=new_id("open"), wallet_id=wallet_id, timestamp_ms=now_ms(), owner_id="o",
                        currency=currency)


def deposit(wallet_id: str, amount_minor: int, currency: str = "EUR", command_id: str | None = None) -> c.Deposit:
    return c.Deposit(command_id=command_id or new_id("dep"), wallet_id=wallet_id, timestamp_ms=now_ms(),
                     amount_minor=amount_minor, currency=currency)


def transfer(source: str, destination: str, amount_minor: int, currency: str = "EUR") -> c.Transfer:
    return c.Transfer(command_id=new_id("tr"), wallet_id=source, timestamp_ms=now_ms(),
                      destination_wallet_id=destination, amount_minor=amount_minor, currency=currency)


async def test_transfer_between_wallets_on_different_partitions_completes(settings, ledger):
    source = wallet_on_partition(0, settings.partitions)
    destination = wallet_on_partition(3, settings.partitions)
    move = transfer(source, destination, 2_500)
    await ledger.send(open_cmd(source), open_cmd(destination), deposit(source, 10_000))
    await _last_open(ledger, destination)
    await ledger.send(move)

    debited = await wait_outcome(ledger, source, move.command_id)
    assert isinstance(debited, e.TransferDebited) and debited.balance_after_minor == 7_500
    credit_id = identity.credit_command_id(source, move.command_id, debited.timestamp_ms)
    credited = await wait_outcome(ledger, destination, credit_id)
    assert isinstance(credited, e.TransferCredited)
    assert (credited.amount_minor, credited.balance_after_minor, credited.source_wallet_id) == (2_500, 2_500, source)


async def _last_open(ledger: Ledger, wallet_id: str) -> str:
    async def opened():
        events = (await outcomes(ledger, wallet_id))[wallet_id]
        return next((ev.command_id for ev in events if isinstance(ev, e.WalletOpened)), None)

    return await wait_for_async(opened, WAIT_S, f"{wallet_id} to open", interval_s=0.3)


@pytest.mark.parametrize("trouble", ["frozen", "closed", "missing", "other_currency"])
async def test_transfer_to_a_wallet_that_refuses_it_is_refunded_to_the_source(settings, ledger, trouble):
    source = wallet_on_partition(1, settings.partitions)
    destination = wallet_on_partition(2, settings.partitions)
    setup: list[c.CommandBase] = [open_cmd(source), deposit(source, 5_000)]
    if trouble != "missing":
        setup.append(open_cmd(destination, "USD" if trouble == "other_currency" else "EUR"))
    if trouble == "frozen":
        setup.append(c.Freeze(command_id=new_id("frz"), wallet_id=destination, timestamp_ms=now_ms()))
    if trouble == "closed":
        setup.append(c.Close(command_id=new_id("cls"), wallet_id=destination, timestamp_ms=now_ms()))
    await ledger.send(*setup)
    await wait_outcome(ledger, source, setup[1].command_id)
    if trouble != "missing":
        await wait_outcome(ledger, destination, setup[-1].command_id)
    move = transfer(source, destination, 1_200)
    await ledger.send(move)

    debited = await wait_outcome(ledger, source, move.command_id)
    refused = await wait_outcome(ledger, destination,
                                 identity.credit_command_id(source, move.command_id, debited.timestamp_ms))
    refunded = await wait_outcome(ledger, source,
                                  identity.refund_command_id(source, move.command_id, refused.timestamp_ms))
    assert isinstance(refunded, e.TransferRefunded)
    assert refunded.balance_after_minor == 5_000
    expected_code = {"frozen": "WALLET_FROZEN", "closed": "WALLET_CLOSED", "missing": "WALLET_NOT_FOUND",
                     "other_currency": "CURRENCY_MISMATCH"}[trouble]
    assert refunded.reason_code == expected_code
    assert isinstance(refused, e.TransferCreditRejected) and refused.code == expected_code


async def test_holds_capture_partially_release_and_expire(settings, ledger):
    wallet_id = new_id()
    place = [c.PlaceHold(command_id=new_id("hold"), wallet_id=wallet_id, timestamp_ms=now_ms(), hold_id=f"h{i}",
                         amount_minor=1_000, currency="EUR",
                         expires_at_ms=now_ms() + (1_500 if i == 2 else 600_000)) for i in range(3)]
    capture = c.CaptureHold(command_id=new_id("cap"), wallet_id=wallet_id, timestamp_ms=now_ms(), hold_id="h0",
                            amount_minor=400)
    release = c.ReleaseHold(command_id=new_id("rel"), wallet_id=wallet_id, timestamp_ms=now_ms(), hold_id="h1")
    await ledger.send(open_cmd(wallet_id), deposit(wallet_id, 10_000), *place, capture, release)

    captured = await wait_outcome(ledger, wallet_id, capture.command_id)
    assert isinstance(captured, e.HoldCaptured)
    assert (captured.amount_minor, captured.released_minor, captured.balance_after_minor) == (400, 600, 9_600)
    released = await wait_outcome(ledger, wallet_id, release.command_id)
    assert isinstance(released, e.HoldReleased) and released.held_after_minor == 1_000

    expired = await wait_outcome(ledger, wallet_id,
                                 identity.expiry_command_id(wallet_id, place[2].hold_id, place[2].expires_at_ms))
    assert isinstance(expired, e.HoldReleased) and expired.reason == "EXPIRED"
    assert (expired.held_after_minor, expired.available_after_minor) == (0, 9_600)


async def test_a_repeated_command_id_is_applied_once_and_a_reused_id_with_another_body_goes_to_dlq(settings, ledger):
    wallet_id = new_id()
    first = deposit(wallet_id, 700)
    again = deposit(wallet_id, 700, command_id=first.command_id)
    conflicting = deposit(wallet_id, 9_999, command_id=first.command_id)
    marker = deposit(wallet_id, 1)
    await ledger.send(open_cmd(wallet_id), first, again)
    await wait_outcome(ledger, wallet_id, first.command_id)
    await ledger.send(again, conflicting, marker)

    last = await wait_outcome(ledger, wallet_id, marker.command_id)
    events = (await outcomes(ledger, wallet_id))[wallet_id]
    assert [ev.command_id for ev in events].count(first.command_id) == 1
    assert last.balance_after_minor == 701
    dlq = [r for r in await read_topic(settings, settings.dlq_topic) if r.key == wallet_id.encode()]
    assert [code for code, _ in dlq_reasons(dlq)] == ["DUPLICATE_COMMAND"]
    assert ledger.commands.decode(dlq[0].value).amount_minor == 9_999


async def test_poison_goes_to_the_dlq_with_a_reason_and_good_commands_around_it_apply(settings, ledger):
    wallet_id = wallet_on_partition(2, settings.partitions)
    key = wallet_id.encode()
    good = [open_cmd(wallet_id), deposit(wallet_id, 100), deposit(wallet_id, 200)]
    forged_credit = c.TransferCredit(command_id=new_id("forged"), wallet_id=wallet_id, timestamp_ms=now_ms(),
                                     transfer_id="t-forged", source_wallet_id="nobody", amount_minor=10**6,
                                     currency="EUR")
    other_key = wallet_on_partition(2, settings.partitions)
    await ledger.send(good[0])
    await ledger.send_raw(key, HEADER.pack(0, ledger.commands.schema_id) + b"\xff\xff\xff garbage, not Avro")
    await ledger.send(good[1])
    await ledger.send_raw(key, b"\x07" + b"wrong magic")
    await ledger.send_raw(key, HEADER.pack(0, 987_654) + b"\x02")
    await ledger.send_raw(key, ledger.commands.encode(forged_credit))
    await ledger.send_raw(other_key.encode(), ledger.commands.encode(deposit(wallet_id, 5)))
    misrouted = deposit(wallet_id, 5)  # not poison: forwarded to the wallet's partition
    await ledger.send_raw(key, ledger.commands.encode(misrouted),
                          partition=(partition_for(key, settings.partitions) + 1) % settings.partitions)
    await ledger.send_raw(None, b"")
    await ledger.send(good[2])

    await wait_outcome(ledger, wallet_id, good[2].command_id)
    forwarded = await wait_outcome(ledger, wallet_id, misrouted.command_id)
    assert isinstance(forwarded, e.Deposited)
    assert (await outcomes(ledger, wallet_id))[wallet_id][-1].balance_after_minor == 305
    records = await read_topic(settings, settings.dlq_topic)
    mine = [r for r in records if r.key in (key, other_key.encode(), None)]
    codes = sorted(code for code, _ in dlq_reasons(mine))
    assert codes == sorted(["UNDECODABLE", "BAD_MAGIC_BYTE", "UNKNOWN_SCHEMA", "INTERNAL_KIND_REFUSED",
                            "KEY_MISMATCH", "TRUNCATED"])
    for record in mine:
        headers = dict(record.headers)
        assert headers["source.topic"].decode() == settings.commands_topic
        assert int(headers["source.offset"]) >= 0 and headers["error.detail"]


async def test_credit_legs_are_accepted_on_the_internal_topic(settings, ledger):
    wallet_id = new_id()
    await ledger.send(open_cmd(wallet_id))
    await _last_open(ledger, wallet_id)
    debited_at_ms = now_ms()
    leg = c.TransferCredit(command_id=identity.credit_command_id("src", "t-internal-" + wallet_id, debited_at_ms),
                           wallet_id=wallet_id, timestamp_ms=debited_at_ms, transfer_id="t-internal-" + wallet_id,
                           source_wallet_id="src",
                           amount_minor=300, currency="EUR")
    await ledger.send(leg, topic=settings.transfer_legs_topic)
    credited = await wait_outcome(ledger, wallet_id, leg.command_id)
    assert isinstance(credited, e.TransferCredited) and credited.balance_after_minor == 300
