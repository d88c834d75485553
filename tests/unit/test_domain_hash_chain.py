"""The hash chain: a wallet's events verify, and altering any field of one event breaks it at that version."""

from __future__ import annotations

import hashlib
from dataclasses import fields, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.commands import (
    CaptureHold,
    Close,
    CommandBase,
    Deposit,
    Freeze,
    OpenWallet,
    PlaceHold,
    ReleaseHold,
    Transfer,
    TransferCredit,
    TransferRefund,
    Unfreeze,
    Withdraw,
)
from app.domain.errors import ChainBroken, DomainError, NonCanonicalValue
from app.domain.events import APPLIED_EVENT_TYPES, EVENT_TYPES, Deposited, EventBase, WalletOpened, is_applied
from app.domain.hashing import GENESIS_HASH, canonical_bytes, canonical_bytes_of, chain_hash
from app.domain.ledger import decide, evolve, replay, verify_chain
from app.domain.state import WalletState

NOW_MS = 1_700_000_000_000


def history() -> list[EventBase]:
    """One wallet's events covering every applied kind and both outcome-only kinds."""
    later_ms = NOW_MS + 60_000
    commands: list[tuple[type[CommandBase], dict[str, Any]]] = [
        (
            TransferCredit,
            {"transfer_id": "t-0", "source_wallet_id": "w0", "amount_minor": 5, "currency": "EUR"},
        ),  # refused: no wallet yet
        (OpenWallet, {"owner_id": "alice", "currency": "EUR", "overdraft_limit_minor": 100}),
        (Deposit, {"amount_minor": 10_000, "currency": "EUR", "reference": "r", "description": "café"}),
        (Withdraw, {"amount_minor": 1_000, "currency": "EUR"}),
        (Withdraw, {"amount_minor": 1_000_000, "currency": "EUR"}),  # refused: insufficient funds
        (Transfer, {"destination_wallet_id": "w2", "amount_minor": 500, "currency": "EUR", "reference": "rent"}),
        (
            TransferRefund,
            {
                "transfer_id": "cmd-5",
                "destination_wallet_id": "w2",
                "amount_minor": 500,
                "currency": "EUR",
                "reason_code": "WALLET_FROZEN",
            },
        ),
        (TransferCredit, {"transfer_id": "t-9", "source_wallet_id": "w3", "amount_minor": 250, "currency": "EUR"}),
        (PlaceHold, {"hold_id": "h1", "amount_minor": 300, "currency": "EUR", "expires_at_ms": later_ms}),
        (PlaceHold, {"hold_id": "h2", "amount_minor": 200, "currency": "EUR", "expires_at_ms": later_ms}),
        (CaptureHold, {"hold_id": "h1", "amount_minor": 100}),
        (ReleaseHold, {"hold_id": "h2", "reason": "not needed"}),
        (Freeze, {"reason": "review"}),
        (Unfreeze, {}),
        (Withdraw, {"amount_minor": 9_150, "currency": "EUR"}),
        (Close, {}),
    ]
    state: WalletState | None = None
    events: list[EventBase] = []
    for number, (command_type, command_fields) in enumerate(commands):
        command = command_type(
            command_id=f"cmd-{number}", wallet_id="w1", timestamp_ms=NOW_MS + number, **command_fields
        )
        [event] = decide(state, command, command.timestamp_ms)  # type: ignore[arg-type]
        state = evolve(state, event)
        events.append(event)
    return events


def test_history_covers_every_applied_event_kind() -> None:
    assert {type(event) for event in history() if is_applied(event)} == set(APPLIED_EVENT_TYPES)


def test_a_wallets_events_verify_and_replay_to_its_state() -> None:
    events = history()
    verify_chain(events)
    state = replay(events)["w1"]
    assert state.version == 14 and state.status == "CLOSED" and state.last_hash == events[-1].hash


def test_empty_stream_verifies() -> None:
    verify_chain([])


def _altered(value: object) -> object:
    if type(value) is int:
        return value + 1
    if isinstance(value, str):
        # keep a hash field a valid-looking hash so the check that fires is the chain, not the format
        return ("0" if value[:1] != "0" else "1") + value[1:] if len(value) == 64 else value + "x"
    raise AssertionError(f"unexpected field value {value!r}")


def _tamper_cases() -> list[tuple[int, str]]:
    return [
        (index, field.name) for index, event in enumerate(history()) if is_applied(event) for field in fields(event)
    ]


@pytest.mark.parametrize(("index", "field_name"), _tamper_cases())
def test_tampering_any_field_of_an_applied_event_breaks_the_chain_at_its_version(index: int, field_name: str) -> None:
    events = history()
    original = events[index]
    events[index] = replace(original, **{field_name: _altered(getattr(original, field_name))})
    with pytest.raises(ChainBroken) as broken:
        verify_chain(events)
    assert broken.value.version == original.version
    assert broken.value.position == index


@pytest.mark.parametrize(
    "field_name", ["version", "balance_after_minor", "available_after_minor", "held_after_minor", "hash"]
)
def test_tampering_the_position_of_an_outcome_only_event_breaks_the_stream(field_name: str) -> None:
    events = history()
    index = 4  # the refused withdrawal, at version 3
    assert not is_applied(events[index])
    events[index] = replace(events[index], **{field_name: _altered(getattr(events[index], field_name))})
    with pytest.raises(ChainBroken) as broken:
        verify_chain(events)
    assert broken.value.version == 3


def test_rehashing_a_forged_amount_is_caught_by_the_carried_balances() -> None:
    events = history()
    index = 2  # the deposit, version 2
    forged = replace(events[index], amount_minor=1_000_000)
    events[index] = replace(forged, hash=chain_hash(events[index - 1].hash, forged))
    with pytest.raises(ChainBroken) as broken:
        verify_chain(events)
    assert broken.value.version == 2


def test_a_consistently_forged_event_breaks_the_link_of_the_next_one() -> None:
    events = history()
    index = 2  # the deposit, version 2; forge amount and balances, and rehash it
    forged = replace(events[index], amount_minor=20_000, balance_after_minor=20_000, available_after_minor=20_100)
    events[index] = replace(forged, hash=chain_hash(events[index - 1].hash, forged))
    with pytest.raises(ChainBroken) as broken:
        verify_chain(events)
    assert broken.value.version == 3


def test_a_lost_event_breaks_the_chain_where_it_is_missing() -> None:
    events = history()
    del events[2]  # the deposit, version 2
    with pytest.raises(ChainBroken) as broken:
        verify_chain(events)
    assert broken.value.version == 2


def test_reordered_events_break_the_chain() -> None:
    events = history()
    events[2], events[3] = events[3], events[2]
    with pytest.raises(ChainBroken) as broken:
        verify_chain(events)
    assert broken.value.version == 2


def test_a_repeated_event_breaks_the_chain() -> None:
    events = history()
    events.insert(3, events[2])
    with pytest.raises(ChainBroken) as broken:
        verify_chain(events)
    assert broken.value.version == 3


def test_an_event_of_another_wallet_breaks_the_stream() -> None:
    events = history()
    events.append(replace(events[-1], wallet_id="w9"))
    with pytest.raises(ChainBroken):
        verify_chain(events)


def test_chain_broken_is_a_domain_error() -> None:
    assert issubclass(ChainBroken, DomainError)


def test_canonical_bytes_are_sorted_compact_ascii_json_without_the_hash() -> None:
    event = Deposited(
        wallet_id="w1",
        command_id="c1",
        timestamp_ms=1,
        version=2,
        balance_after_minor=150,
        available_after_minor=150,
        held_after_minor=0,
        hash="ab" * 32,
        amount_minor=150,
        currency="EUR",
        reference="r",
        description="café",
    )
    assert canonical_bytes(event) == (
        b'{"amount_minor":150,"available_after_minor":150,"balance_after_minor":150,"command_id":"c1",'
        b'"currency":"EUR","description":"caf\\u00e9","held_after_minor":0,"kind":"Deposited",'
        b'"reference":"r","timestamp_ms":1,"version":2,"wallet_id":"w1"}'
    )
    assert chain_hash(GENESIS_HASH, event) == hashlib.sha256(bytes(32) + canonical_bytes(event)).hexdigest()
    assert canonical_bytes(replace(event, hash="cd" * 32)) == canonical_bytes(event)


def test_first_event_is_chained_to_the_genesis_hash() -> None:
    opened = history()[1]
    assert isinstance(opened, WalletOpened)
    assert opened.hash == chain_hash(GENESIS_HASH, opened)
    assert GENESIS_HASH == "0" * 64


@pytest.mark.parametrize("value", [1.0, True, b"x", [1]])
def test_values_without_a_canonical_form_are_refused(value: object) -> None:
    event = replace(history()[2], amount_minor=value)  # type: ignore[arg-type]
    with pytest.raises(NonCanonicalValue):
        canonical_bytes(event)


def _json_dumps_canonical(kind: str, values: dict[str, object]) -> bytes:
    """The definition the stored hash chains were written with (before the hand-written encoder)."""
    import json

    document = {"kind": kind, **values}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


_canonical_values = st.one_of(st.none(), st.integers(min_value=-(2**70), max_value=2**70), st.text())


@settings(max_examples=500, deadline=None)
@given(kind=st.sampled_from([t.__name__ for t in EVENT_TYPES]),
       values=st.dictionaries(st.text(min_size=1), _canonical_values, max_size=12))
def test_canonical_bytes_are_json_dumps_bytes_for_any_values(kind: str, values: dict[str, object]) -> None:
    # Logs written before the hand-written encoder must still verify: same bytes for any text and any int.
    assert canonical_bytes_of(kind, values) == _json_dumps_canonical(kind, values)


@pytest.mark.parametrize("event", history(), ids=lambda event: type(event).__name__)
def test_canonical_bytes_of_every_event_kind_are_json_dumps_bytes(event: EventBase) -> None:
    values = {f.name: getattr(event, f.name) for f in fields(event) if f.name != "hash"}
    assert canonical_bytes(event) == _json_dumps_canonical(type(event).__name__, values)
