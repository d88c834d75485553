"""Fuzz: 10,000 malformed or invalid commands interleaved with valid ones.

The worker must never crash; every message that cannot be a command is in the DLQ with the reason
we built it to have; every schema-valid command with impossible values gets exactly one outcome
(a `CommandRejected` with the right code: rejections are events, not poison); every good command is
applied exactly as the pure domain decides it; and no partition stalls (the processor's committed
offsets reach the end of every partition).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.codec import HEADER
from app.domain import commands as c
from app.domain import events as e
from app.domain.ledger import decide, evolve
from app.domain.limits import Limits
from tests.conftest import prepare_topics
from tests.harness import (Ledger, WorkerProcess, dlq_reasons, isolated_settings, now_ms, read_topic,
                           wait_for_async)

BAD_COUNT = 10_000
GOOD_COUNT = 3_000
WALLETS = 40
SEED = 20261125
# The group's committed offsets follow the last transaction within this (they are committed after it).
GROUP_OFFSETS_TIMEOUT_S = 30.0


def _command_bytes(ledger: Ledger, command: c.CommandBase) -> bytes:
    return ledger.commands.encode(command)


def build_traffic(ledger: Ledger, partitions: int, rng: random.Random):
    """Return (messages, expected_dlq_reasons, expected_rejections, good_commands) in send order."""
    ts = now_ms()
    wallets = [f"fz-{i:03d}-{rng.randrange(10**6):06d}" for i in range(WALLETS)]
    messages: list[tuple[bytes | None, bytes, int | None, str]] = []  # key, value, partition, expectation
    good: list[c.CommandBase] = [c.OpenWallet(command_id=f"fz-open-{w}", wallet_id=w, timestamp_ms=ts,
                                              owner_id="fuzz", currency="EUR") for w in wallets]
    for i in range(GOOD_COUNT):
        wallet = rng.choice(wallets)
        kind = c.Deposit if rng.random() < 0.6 else c.Withdraw
        good.append(kind(command_id=f"fz-good-{i}", wallet_id=wallet, timestamp_ms=ts,
                         amount_minor=rng.randint(1, 50_000), currency="EUR"))
    bad: list[tuple[bytes | None, bytes, int | None, str]] = []
    valid_example = _command_bytes(ledger, good[WALLETS])
    for i in range(BAD_COUNT):
        wallet = rng.choice(wallets)
        key = wallet.encode()
        category = i % 10
        if category == 0:
            bad.append((key, rng.randbytes(rng.randint(0, 4)), None, "TRUNCATED"))
        elif category == 1:
            bad.append((key, bytes([rng.randint(1, 255)]) + rng.randbytes(rng.randint(4, 200)), None,
                        "BAD_MAGIC_BYTE"))
        elif category == 2:
            # Unknown ids from a bounded range, so the registry is asked at most a few hundred times.
            bad.append((key, HEADER.pack(0, rng.randint(5_000_000, 5_000_300)) + rng.randbytes(20), None,
                        "UNKNOWN_SCHEMA"))
        elif category == 3:
            cut = rng.randint(HEADER.size + 1, len(valid_example) - 1)
            bad.append((key, valid_example[:cut], None, "UNDECODABLE"))
        elif category == 4:
            bad_id = rng.choice(["", "has space", "slash/inside", "x" * 65, "ünïcode"])
            command = c.Deposit(command_id=f"fz-bad-{i}", wallet_id=bad_id, timestamp_ms=ts, amount_minor=1,
                                currency="EUR")
            bad.append((bad_id.encode(), _command_bytes(ledger, command), None, "INVALID_FIELD"))
        elif category == 5:
            command = c.Deposit(command_id=f"fz-bad-{i}", wallet_id=wallet, timestamp_ms=ts, amount_minor=1,
                                currency=rng.choice(["eur", "EURO", "E1R", ""]))
            bad.append((key, _command_bytes(ledger, command), None, "INVALID_FIELD"))
        elif category == 6:
            other = rng.choice([w for w in wallets if w != wallet])
            command = c.Deposit(command_id=f"fz-bad-{i}", wallet_id=wallet, timestamp_ms=ts, amount_minor=1,
                                currency="EUR")
            bad.append((other.encode(), _command_bytes(ledger, command), None, "KEY_MISMATCH"))
        elif category == 7:
            command = c.TransferCredit(command_id=f"fz-bad-{i}", wallet_id=wallet, timestamp_ms=ts,
                                       transfer_id=f"fz-t-{i}", source_wallet_id="x", amount_minor=10**9,
                                       currency="EUR")
            bad.append((key, _command_bytes(ledger, command), None, "INTERNAL_KIND_REFUSED"))
        elif category == 8:
            # A public command under an id of the ledger's own namespace (app/identity.py).
            reserved = rng.choice([f"~credit/{wallet}/fz-t-{i}", f"~expire/{wallet}/fz-{i}", f"~fz-{i}"])
            command = c.Deposit(command_id=reserved, wallet_id=wallet, timestamp_ms=ts, amount_minor=1,
                                currency="EUR")
            bad.append((key, _command_bytes(ledger, command), None, "RESERVED_COMMAND_ID"))
        else:
            # Schema-valid, impossible values: the domain rejects them (an outcome, not poison).
            amount, code = rng.choice([(0, "INVALID_AMOUNT"), (-5, "INVALID_AMOUNT"),
                                       (Limits().amount_max_minor("EUR") + 1, "LIMIT_EXCEEDED"),
                                       (2**63 - 1, "LIMIT_EXCEEDED")])
            command = c.Withdraw(command_id=f"fz-bad-{i}", wallet_id=wallet, timestamp_ms=ts, amount_minor=amount,
                                 currency="EUR")
            bad.append((key, _command_bytes(ledger, command), None, f"REJECT:{code}:{command.command_id}"))
    # Interleave: the opens first (so good commands find their wallets), then a shuffled mix that
    # keeps the good commands in their order.
    rest = [("good", cmd) for cmd in good[WALLETS:]] + [("bad", item) for item in bad]
    rng.shuffle(rest)
    good_iter = iter(good[WALLETS:])
    ordered = [("good", cmd) for cmd in good[:WALLETS]]
    for tag, item in rest:
        ordered.append((tag, next(good_iter)) if tag == "good" else (tag, item))
    for tag, item in ordered:
        if tag == "good":
            messages.append((item.wallet_id.encode(), _command_bytes(ledger, item), None, "GOOD"))
        else:
            messages.append(item)
    return messages, good


def expected_outcomes(good: list[c.CommandBase]) -> dict[str, tuple[str, int]]:
    """command_id -> (event kind, balance after), by deciding the good commands with the pure domain."""
    states: dict[str, object] = {}
    expected = {}
    for command in good:
        (event,) = decide(states.get(command.wallet_id), command, command.timestamp_ms)
        states[command.wallet_id] = evolve(states.get(command.wallet_id), event)
        expected[command.command_id] = (type(event).__name__, event.balance_after_minor)
    return expected


async def test_fuzzed_poison_goes_to_the_dlq_and_good_commands_all_apply(stack):
    settings = prepare_topics(isolated_settings(stack, "fuzz"))
    worker = WorkerProcess(settings, ["processor"]).start()
    rng = random.Random(SEED)
    async with Ledger(settings) as ledger:
        messages, good = build_traffic(ledger, settings.partitions, rng)
        for key, value, partition, _ in messages:
            await ledger._producer.send(settings.commands_topic, key=key, value=value, partition=partition)
        await ledger._producer.flush()
        expected = expected_outcomes(good)

        async def all_outcomes():
            events = await ledger.read_all(settings.events_topic)
            return events if len(events) >= len(good) + BAD_COUNT // 10 else None

        events = await wait_for_async(all_outcomes, 240, "an outcome for every good and rejected command", 1.0)
        dlq = await read_topic(settings, settings.dlq_topic)

    assert worker.alive() and worker.starts == 1, "the worker must survive the fuzz without a restart"
    by_command: dict[str, list[e.EventBase]] = defaultdict(list)
    for event in events:
        by_command[event.command_id].append(event)
    assert all(len(outcomes) == 1 for outcomes in by_command.values()), "exactly one outcome per command"
    for command_id, (kind, balance_after) in expected.items():
        (event,) = by_command[command_id]
        assert (type(event).__name__, event.balance_after_minor) == (kind, balance_after), command_id
    for _, _, _, expectation in messages:
        if expectation.startswith("REJECT:"):
            _, code, command_id = expectation.split(":", 2)
            (event,) = by_command[command_id]
            assert isinstance(event, e.CommandRejected) and event.code == code

    expected_dlq = Counter(exp for _, _, _, exp in messages if exp not in ("GOOD",) and not exp.startswith("REJECT:"))
    assert Counter(code for code, _ in dlq_reasons(dlq)) == expected_dlq
    assert all(detail for _, detail in dlq_reasons(dlq)), "every DLQ message says why"
    assert sum(expected_dlq.values()) == BAD_COUNT - BAD_COUNT // 10

    async with Ledger(settings) as ledger:
        records = await read_topic(settings, settings.commands_topic)
    ends = Counter()
    for record in records:
        ends[record.partition] = max(ends[record.partition], record.offset + 1)
    # The group's offsets (for lag tools) are committed after each transaction, outside it: they follow.
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()

    async def group_at_the_end():
        committed = await admin.list_consumer_group_offsets(f"{settings.app_id}-processor")
        behind = [p for p, end in ends.items() if committed.get(TopicPartition(settings.commands_topic, p)) is None
                  or committed[TopicPartition(settings.commands_topic, p)].offset < end]
        return committed if not behind else None

    try:
        await wait_for_async(group_at_the_end, GROUP_OFFSETS_TIMEOUT_S, "the group's offsets at the end of every "
                             "commands partition (a partition stalled)", interval_s=0.2)
    finally:
        await admin.close()
    assert worker.stop() == 0
