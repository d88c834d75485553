"""What a ledger run must satisfy afterwards, whatever faults it went through (shared by the system tests)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from app import identity
from app.domain import events as e
from app.domain.ledger import replay, verify_chain
from tables.wallet_store import decode_state, open_read_only
from wallet.reconcile import in_transit  # by source, id and debit time: a reused id is another transfer


def assert_exactly_once(events: list[e.EventBase], sent_ids: set[str], dlq: list, poison: list[bytes],
                        leg_ids: Counter) -> None:
    """One outcome per command, each poison message in the DLQ once, each transfer leg published once."""
    dlq_values = Counter(record.value for record in dlq)
    assert set(dlq_values) == set(poison), "every poison message, and nothing else, is in the DLQ"
    assert max(dlq_values.values(), default=1) == 1, (
        f"{sum(n > 1 for n in dlq_values.values())} poison messages are in the DLQ twice")
    expected_legs = {identity.credit_command_id(ev.wallet_id, ev.transfer_id, ev.timestamp_ms) for ev in events
                     if isinstance(ev, e.TransferDebited)}
    expected_legs |= {identity.refund_command_id(ev.source_wallet_id, ev.transfer_id, ev.timestamp_ms) for ev in events
                      if isinstance(ev, e.TransferCreditRejected)}
    assert set(leg_ids) == expected_legs and max(leg_ids.values(), default=1) == 1, (
        "each transfer leg is published exactly once")
    counts = Counter(ev.command_id for ev in events)
    duplicated = {cid: n for cid, n in counts.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} command ids have more than one outcome, e.g. {list(duplicated)[:5]}"
    missing = sent_ids - set(counts)
    assert not missing, f"{len(missing)} commands have no outcome"


def assert_stores_equal_replay_and_money_is_conserved(events: list[e.EventBase], store_paths: list[Path]) -> None:
    """Each hash chain verifies, the stores equal a replay, nothing is in transit, money is conserved."""
    by_wallet: dict[str, list[e.EventBase]] = defaultdict(list)
    for event in events:
        by_wallet[event.wallet_id].append(event)
    for wallet_events in by_wallet.values():
        verify_chain(wallet_events)
    replayed = replay(events)
    table, gauges = {}, []
    for path in store_paths:
        db = open_read_only(path)
        try:
            for key, value in db.items(from_key=b"w/"):
                if not key.startswith(b"w/"):
                    break
                table[key[2:].decode()] = decode_state(key[2:].decode(), value)
            raw = db.get(b"m/gauges")  # absent until an event moved a figure (tables/wallet_store.py)
            gauges.append(json.loads(raw) if raw is not None else {"in_transit": {}, "holds_open": 0})
        finally:
            db.close()
    assert table == replayed, "the table must equal a replay of the committed events"
    assert sum(g["holds_open"] for g in gauges) == sum(len(s.holds) for s in replayed.values())
    assert sum(g["in_transit"].get("EUR", 0) for g in gauges) == 0, "the in-transit gauge must settle to zero"
    stuck = in_transit(events)
    assert not stuck, f"{len(stuck)} transfers are stuck in transit"
    deposits = sum(ev.amount_minor for ev in events if isinstance(ev, e.Deposited))
    withdrawals = sum(ev.amount_minor for ev in events if isinstance(ev, e.Withdrawn))
    captures = sum(ev.amount_minor for ev in events if isinstance(ev, e.HoldCaptured))
    assert sum(state.balance_minor for state in replayed.values()) == deposits - withdrawals - captures
